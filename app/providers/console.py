"""The provider for `make run` and local work: sends nothing, logs each reply and keeps the last ones."""

from __future__ import annotations

import logging
import secrets
from collections import deque

from app.phone import mask
from app.providers.base import OutboundSms, SendResult

logger = logging.getLogger("optline.console")


class ConsoleProvider:
    """Accepts every text, logs it with the phone masked and remembers the last `keep`."""

    name = "console"

    def __init__(self, keep: int = 1000) -> None:
        # deque.append is atomic, so worker threads can send concurrently without a lock.
        self.sent: deque[tuple[OutboundSms, SendResult]] = deque(maxlen=keep)

    def send(self, message: OutboundSms) -> SendResult:
        """Record and log `message`; always succeeds with status "sent"."""
        result = SendResult(message_id="CONSOLE" + secrets.token_hex(16), status="sent")
        self.sent.append((message, result))
        logger.info(
            "reply %s to %s via %s: %r",
            result.message_id,
            mask(message.to),
            message.service_id or mask(message.from_number),
            message.body,
        )
        return result

    async def send_async(self, message: OutboundSms) -> SendResult:
        """`send`, awaited on the event loop: it does no I/O but its log line, so a thread hop
        (about a tenth of the default process's CPU per reply in `make bench`) buys nothing."""
        return self.send(message)

    def messages(self, to: str | None = None) -> list[OutboundSms]:
        """The texts kept, oldest first, optionally only those to `to`."""
        return [message for message, _ in list(self.sent) if to is None or message.to == to]

    def close(self) -> None:
        """Nothing to release; here so every provider can be closed the same way."""
