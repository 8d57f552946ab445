"""A local durable spool for webhooks the database could not take in time: answered 200, applied later.

When the database is down, or SQLite's write lock is held by another process, a provider's
webhook cannot wait: Twilio gives up after 15 s and does not retry a 503 by default, so a
STOP would be lost. Instead the verified form is appended here (fsynced before the 200) and
applied, in order, as soon as the database answers again, and at start-up.

    webhook ──writer.run──▶ committed ─▶ 200
       │  (DatabaseUnavailable, or the spool already holds texts: keep their order)
       └──append + fsync──▶ spool file ─▶ 200            (only if that fails: 503)
                                 │
    drain task ─────────────────┘──▶ writer.run(jobs, as of when each was received) ─▶ truncate

Each process appends to a file of its own (`spool-<database>-<host>-<pid>-<random>-<n>.jsonl` in
the spool folder) and holds an exclusive flock on it while it lives; a file nobody holds belongs to a
process that died, and any live process adopts it. Records are applied as of the time they
were received and deduplicated by message id, so applying one twice (a crash mid-drain, or a
job that did commit after its webhook gave up on it) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import queue
import re
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

log = logging.getLogger("optline.spool")

VERSION = 1
CHUNK = 64  # records applied per round: the writer takes them as one batch


@dataclass(frozen=True)
class Record:
    """One spooled webhook: which kind, from which provider, when it arrived, and what was verified.

    Twilio's are forms (`form`); the other providers' keep the raw body they signed (`body`)
    with its content type, and are parsed again by their adapter when applied.
    """

    kind: str  # "inbound" | "status" (Twilio), "event" (any other provider)
    provider: str
    received_at: datetime
    form: tuple[tuple[str, str], ...]
    body: str | None = None
    content_type: str | None = None

    def line(self) -> bytes:
        """The record as one JSON line."""
        data: dict[str, Any] = {"v": VERSION, "kind": self.kind, "provider": self.provider,
                                "receivedAt": self.received_at.isoformat(), "form": [list(p) for p in self.form]}
        if self.body is not None:
            data.update(body=self.body, contentType=self.content_type)
        return (json.dumps(data, ensure_ascii=False) + "\n").encode()

    @classmethod
    def parse(cls, line: bytes) -> Record:
        """A record from one line; ValueError for anything else."""
        data = json.loads(line)
        if not isinstance(data, dict) or data.get("v") != VERSION:
            raise ValueError("not a spool record")
        body, content_type = data.get("body"), data.get("contentType")
        return cls(kind=str(data["kind"]), provider=str(data["provider"]),
                   received_at=datetime.fromisoformat(data["receivedAt"]),
                   form=tuple((str(k), str(v)) for k, v in data["form"]),
                   body=str(body) if body is not None else None,
                   content_type=str(content_type) if content_type is not None else None)


class SpoolError(Exception):
    """The spool could not take a record (the disk is full or read-only)."""


_VALID = re.compile(r"-valid(\d+)\.jsonl$")


class Spool:
    """This process's spool file, and the orphans of dead processes in the same folder.

    One thread (`optline-spool`) does every write, fsync and truncation of the active file, so
    the event loop never waits on the disk, and `_lock` guards only the counters, never I/O.
    A record is answered 200 only once its bytes are all written and fsynced; a batch that
    fails is cut off the file again before anyone is told, so a failed append leaves nothing
    behind and is never applied. Should even that cut fail, the file is retired under a name
    that records how much of it is good (`-valid<N>.jsonl`), and nothing past that is applied.
    """

    def __init__(self, folder: str | os.PathLike[str], *, database: str = ""):
        self.folder = Path(folder)
        # Files are named after the database they belong to: a spool folder shared by two
        # deployments (or a developer's test runs) never applies one's texts to the other.
        self._scope = "spool-" + hashlib.sha256(database.encode()).hexdigest()[:12]
        # Host and PID are for people; the random part is what no restart can reuse (a container's
        # process is PID 1 on the same hostname every time, and a dead one's file may still be here).
        self._name = f"{self._scope}-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(6)}"
        self._serial = 0
        self._fd: int | None = None  # the active file (append, flocked while we live); writer thread only
        self._path: Path | None = None
        self._size = 0  # bytes of whole, fsynced records in the active file
        self._drained = 0  # bytes of the active file applied so far
        self._retired = False  # a failed batch could not be cut off: no more appends to this file
        self._queue: queue.SimpleQueue[tuple[bytes | None, Future[None] | None] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.backlog = 0  # records appended and not yet applied, in this process
        self.appended = 0

    # --- appending (a thread of its own: fsync must not block the event loop) -------------------

    async def append(self, record: Record) -> None:
        """Write `record` durably (fsync); SpoolError when that is impossible."""
        self._start()
        fut: Future[None] = Future()
        self.backlog += 1
        self._queue.put((record.line(), fut))
        try:
            await asyncio.wrap_future(fut)
        except OSError as exc:
            self.backlog -= 1
            log.error("spool: a record was not written to %s: %s", self.folder, exc.strerror or exc)
            raise SpoolError(f"cannot write the spool in {self.folder}: {exc.strerror or exc}") from exc
        self.appended += 1

    def _start(self) -> None:
        if self._thread is None:  # only the event loop's thread starts it
            self._thread = threading.Thread(target=self._writer, name="optline-spool", daemon=True)
            self._thread.start()

    def _writer(self) -> None:
        """Write what is queued, one fsync for all of it (group commit), then report each."""
        while True:
            first = self._queue.get()
            if first is None:
                return
            items = [first]
            while True:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                items.append(nxt)
            appends: list[tuple[bytes, Future[None]]] = []
            for line, fut in items:  # in order: appends in one batch, a compaction where it was asked
                if line is not None and fut is not None:
                    appends.append((line, fut))
                    continue
                self._append_batch(appends)
                appends = []
                self._compact()
            self._append_batch(appends)

    def _append_batch(self, appends: list[tuple[bytes, Future[None]]]) -> None:
        if not appends:
            return
        error: OSError | None = None
        try:
            self._write(b"".join(line for line, _fut in appends))
        except OSError as exc:
            error = exc
        for _line, fut in appends:
            if error is None:
                fut.set_result(None)
            else:
                fut.set_exception(error)

    def _write(self, data: bytes) -> None:
        """Append `data` whole and fsync it, or leave the file as it was and raise OSError."""
        if self._retired:
            raise OSError(errno.EIO, "the spool file could not be repaired after a failed write")
        self._open()
        assert self._fd is not None
        with self._lock:
            good = self._size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            self._cut_back(good)
            raise
        with self._lock:
            self._size = good + len(data)

    def _cut_back(self, good: int) -> None:
        """Remove what a failed batch may have left past `good` bytes, so it can never be applied."""
        assert self._fd is not None and self._path is not None
        try:
            os.ftruncate(self._fd, good)
            os.fsync(self._fd)
            return
        except OSError as exc:
            why = exc.strerror or str(exc)
        # The file keeps bytes of records answered 503. Say in its name how much of it is good:
        # whoever drains it (this process, or one adopting it) reads no further.
        retired = self._path.with_name(f"{self._path.stem}-valid{good}.jsonl")
        try:
            os.rename(self._path, retired)
            _fsync_dir(self.folder)
        except OSError as exc:
            log.critical("spool: %s holds a failed write past byte %d and cannot be cut (%s) or renamed (%s)",
                         self._path, good, why, exc.strerror or exc)
        else:
            log.error("spool: a failed write could not be cut off (%s); %s is read up to byte %d only",
                      why, retired.name, good)
            with self._lock:
                self._path = retired
        self._retired = True

    def _open(self) -> None:
        if self._fd is not None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self._serial += 1
        path = self.folder / f"{self._name}-{self._serial}.jsonl"
        # Made under a name no drain looks at, locked, then renamed: another process listing
        # orphans can never adopt (and delete) it between its creation and our lock.
        hidden = self.folder / f".{path.name}.new"
        fd = os.open(hidden, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a new file: nobody else can hold it
            os.rename(hidden, path)
            _fsync_dir(self.folder)  # the new file's name survives a power cut too
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(hidden)
            raise
        with self._lock:
            self._fd, self._path, self._size, self._drained = fd, path, 0, 0

    def _compact(self) -> None:
        """Empty the active file once everything written to it was applied (writer thread)."""
        with self._lock:
            if self._fd is None or self._drained < self._size or self.backlog:
                return
            fd, path, retired = self._fd, self._path, self._retired
        try:
            if retired:  # drained to its last good byte: let it go, the next append starts a new file
                assert path is not None
                os.unlink(path)
                os.close(fd)
                with self._lock:
                    self._fd, self._path, self._size, self._drained = None, None, 0, 0
                self._retired = False
                return
            os.ftruncate(fd, 0)
            os.fsync(fd)
        except OSError as exc:
            log.warning("spool: cannot empty %s yet: %s", path, exc.strerror or exc)
            return
        with self._lock:
            self._size = self._drained = 0

    def close(self) -> None:
        """Stop the writer thread and release the file (its undrained records are adopted later)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10)
            self._thread = None
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def reject(self, record: Record, why: str) -> None:
        """Set a record that cannot be applied aside in `rejected.jsonl` (fsynced), and say so in the log."""
        log.error("spool: a %s webhook cannot be applied and is kept in %s: %s", record.kind,
                  self.folder / "rejected.jsonl", why)
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "rejected.jsonl", "ab") as fh:
            fh.write(record.line())
            fh.flush()
            os.fsync(fh.fileno())

    # --- draining --------------------------------------------------------------------------------

    def own_records(self) -> tuple[list[tuple[int, Record]], int]:
        """This process's records not yet applied, each with the offset after it, and where they start."""
        with self._lock:
            if self._path is None or self._drained >= self._size:
                return [], self._drained
            start, end, path = self._drained, self._size, self._path
        try:
            with open(path, "rb") as fh:
                fh.seek(start)
                data = fh.read(end - start)
        except FileNotFoundError:  # renamed by the writer a moment ago: next round
            return [], start
        return _records(data, start), start

    def mark_drained(self, offset: int, count: int) -> None:
        """Records up to `offset` were applied; when everything written was, the writer empties the file."""
        with self._lock:
            self._drained = max(self._drained, offset)
            self.backlog = max(0, self.backlog - count)
            done = self._drained >= self._size and self.backlog == 0
        if done and self._thread is not None:
            self._queue.put((None, None))

    def orphans(self) -> list[Path]:
        """Spool files of processes that are gone (nobody holds their lock)."""
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.glob(f"{self._scope}-*.jsonl") if p != self._path)

    @contextlib.contextmanager
    def adopt(self, path: Path) -> Any:
        """Hold an orphan's lock while it is drained; yields its records, or None if its process still lives."""
        try:
            fh = open(path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            try:
                same = os.stat(path).st_ino == os.fstat(fh.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # another process adopted and removed it between our open and our lock
                yield None
                return
            valid = _VALID.search(path.name)
            data = fh.read(int(valid[1])) if valid else fh.read()
            yield [record for _offset, record in _records(data, 0)]
        finally:
            fh.close()

    @property
    def pending(self) -> bool:
        """True while this process holds records not yet applied: new texts queue behind them, in order."""
        return self.backlog > 0


def _records(data: bytes, start: int) -> list[tuple[int, Record]]:
    out = []
    offset = start
    for line in data.splitlines(keepends=True):
        offset += len(line)
        if not line.endswith(b"\n"):
            break  # a record cut off by a crash mid-write was never answered 200
        try:
            out.append((offset, Record.parse(line)))
        except (ValueError, KeyError, TypeError):
            log.error("skipping an unreadable spool record of %d bytes", len(line))
    return out


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


async def drain_forever(spool: Spool, apply: Callable[[list[Record]], Awaitable[None]], *,
                        idle: float = 1.0, wake: asyncio.Event | None = None) -> None:
    """Apply spooled records, oldest first, whenever there are any; back off while the database is away."""
    pause = 0.2
    while True:
        try:
            progressed = await drain_once(spool, apply)
            pause = 0.2
        except Exception as exc:  # noqa: BLE001 - the database is still away: try again later
            log.warning("spool: cannot apply yet (%s); retrying in %.1f s", type(exc).__name__, pause)
            progressed = False
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
            continue
        if progressed:
            continue
        if wake is None:
            await asyncio.sleep(idle)
            continue
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), timeout=idle)
        wake.clear()


async def drain_once(spool: Spool, apply: Callable[[list[Record]], Awaitable[None]]) -> bool:
    """Apply one chunk of this process's records, or one orphan file; True when something was applied."""
    records, _start = await asyncio.to_thread(spool.own_records)
    if records:
        chunk = records[:CHUNK]
        await apply([record for _offset, record in chunk])
        spool.mark_drained(chunk[-1][0], len(chunk))
        log.info("spool: applied %d record(s)", len(chunk))
        return True
    for path in spool.orphans():
        with spool.adopt(path) as orphaned:
            if orphaned is None:
                continue
            for start in range(0, len(orphaned), CHUNK):
                await apply(orphaned[start:start + CHUNK])
            path.unlink()
            log.info("spool: applied %d record(s) left by a process that stopped (%s)", len(orphaned), path.name)
            return True
    return False
