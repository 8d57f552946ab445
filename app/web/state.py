"""What the web layer shares: built once in create_app, read by every request."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy.engine import Connection, Engine
from starlette.concurrency import run_in_threadpool

from app.auth import KeyCache
from app.db import Writer
from app.keywords import Rules
from app.metrics import Metrics
from app.outbox.sender import OutboxSender
from app.providers.registry import Providers
from app.providers.twilio import TwilioSignature
from app.settings import Settings
from app.spool import Spool

T = TypeVar("T")


@dataclass
class AppState:
    """The running app's parts."""

    settings: Settings
    rules: Rules  # replaced whole on reload (app.reload); read it once per request or job
    writer: Writer
    reader: Engine
    providers: Providers
    signature: TwilioSignature | None
    keys: KeyCache
    metrics: Metrics
    clock: Callable[[], datetime]
    spool: Spool
    sender: OutboxSender | None = None
    spool_wake: asyncio.Event | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    def wake_sender(self, *, urgent: bool = True) -> None:
        """Tell the in-process sender a reply is waiting; not `urgent`, it may wait a few ms to send a batch."""
        if self.sender is not None:
            self.sender.wake(urgent=urgent)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run a read-only query on a reader connection, off the event loop."""

        def run() -> T:
            with self.reader.connect() as conn:
                return fn(conn)

        return await run_in_threadpool(run)
