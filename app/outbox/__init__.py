"""The transactional outbox: enqueue replies inside the caller's transaction; claim and send due rows.

One concern a module, each imported from where it lives (this package re-exports nothing):

- `queue`: the rows and their SQL: enqueue, cancel, claim (by priority, in turn per phone), redrive;
- `dispatch`: the send decided under the phone's lock, and the sender's rate slot settled;
- `records`: a send's outcome recorded (one at a time, or a batch in two statements);
- `reports`: the providers' delivery reports, in any order, never moving a row backwards;
- `sender`: `OutboxSender`, the async loop that claims, decides, sends and records.

Row lifecycle (column `status`):

    pending ──claim──▶ sending ──dispatch──▶ dispatching ──accepted──▶ queued ─▶ sending* ─▶ sent ─▶ delivered | …
       ▲                 │                        │      (*provider-side status from callbacks; never backwards)
       └──transient──────┴────────────────────────┤
                         │                        └──permanent / deadline passed──▶ failed
                         └──a stop landed first──▶ cancelled

Claims take due rows by priority (stop replies, then help and welcome, then prompts and
brand events) and lease them. Right before the provider call, `dispatch` decides the send
under the phone's lock: a text is still allowed unless a stop cancelled it or the phone
opted out of its program since it was queued. A STOP for that phone is serialised with that
decision, so no send is decided after the STOP commits, and a STOP never touches a row
already dispatching (its text is on its way; the row records what really happened).

A claim is a lease: a sender that dies mid-batch leaves rows in `sending` or `dispatching`
with `lease_until` in the past; the next claim takes them over and `dispatch` checks them
again. Transient failures retry with backoff until the row's deadline (`deadline_at`, else
its purpose's budget from when it was queued); `redrive` (`optline outbox retry`) gives
failed rows that are still allowed a new one.
"""
