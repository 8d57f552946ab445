"""uvicorn's HTTP protocol with a deadline for the request head.

uvicorn times out idle keep-alive connections, but not a connection that opens and sends
nothing, or sends its headers a byte at a time: thousands of those hold sockets and memory for
as long as the client likes (found: 4,000 half-open connections held). This protocol gives each
request head `header_timeout` seconds (OPTLINE_HEADER_TIMEOUT_SECONDS), counted from the
connection's opening or the request's first byte, and closes the connection when it runs out.
A reverse proxy in front (docs/deployment.md) should have its own limit too.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("optline.http")


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """httptools' protocol, closing a connection whose request head does not arrive in time."""

    header_timeout: float = 10.0  # set once per process by `configure`
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            log.debug("closing a connection that sent no whole request head in %.0f s", self.header_timeout)
            self.transport.close()


def configure(header_timeout: float) -> type[HeaderTimeoutProtocol]:
    """Set this process's deadline for request heads; the protocol class to give uvicorn."""
    HeaderTimeoutProtocol.header_timeout = header_timeout
    return HeaderTimeoutProtocol


__all__ = ["HeaderTimeoutProtocol", "configure"]
