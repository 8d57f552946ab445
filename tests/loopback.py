"""The HTTP server under the test fakes: serve on 127.0.0.1 from a thread, leave nothing behind.

`FakeTwilio` and `EventReceiver` subclass `LoopbackServer` and write only `_handle`: it
listens on an ephemeral port (`url`), serves from a background thread, and `close()` cuts
idle keep-alive connections and joins every thread, so no thread or socket outlives a test.
A fake that needs other server or handler settings subclasses `LoopbackHTTPServer` or
`LoopbackHandler` and names them in `server_class` / `handler_class`.
"""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class LoopbackHandler(BaseHTTPRequestHandler):
    """Hands every POST to the LoopbackServer that owns the server; tracks its connection."""

    protocol_version = "HTTP/1.1"  # keep-alive, so the client's pooled connections are exercised
    sys_version = ""
    timeout = 30  # an idle keep-alive connection is closed by LoopbackServer.close() long before
    server: LoopbackHTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read the fake's recorded requests instead."""

    def do_POST(self) -> None:
        self.server.owner._handle(self)


class LoopbackHTTPServer(ThreadingHTTPServer):
    """Joins its handler threads on close."""

    daemon_threads = False
    block_on_close = True  # server_close() joins the handler threads
    owner: LoopbackServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer (after its timeout) is expected: stay quiet."""


class LoopbackServer:
    """An HTTP server on 127.0.0.1 for one test; subclasses answer requests in `_handle`."""

    server_class: type[LoopbackHTTPServer] = LoopbackHTTPServer
    handler_class: type[LoopbackHandler] = LoopbackHandler
    thread_name = "loopback-server"
    # The benchmark lowers the fakes' CPU priority: they stand in for remote services and
    # must not take a 2-core machine's CPU from the process being measured.
    nice = 0

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._address = (host, port)
        self._cond = threading.Condition()  # guards the connections and the subclass's records
        self._connections: set[socket.socket] = set()
        self._stop = threading.Event()  # set by close(): scripted delays wait on it
        self._server: LoopbackHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The server's base URL, e.g. http://127.0.0.1:53211."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Self:
        """Listen on an ephemeral port and serve from a background thread."""
        if self._server is not None:
            raise RuntimeError(f"{type(self).__name__} is already started")
        self._stop.clear()
        self._server = self.server_class(self._address, self.handler_class)
        self._server.owner = self
        self._thread = threading.Thread(target=self._serve, args=(self._server,), name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, wake scripted delays, cut open connections, join every thread; idempotent."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stop.set()
        server.shutdown()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:  # idle keep-alive handlers are blocked reading: wake them
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()  # joins the handler threads
        thread.join()
        self._server = self._thread = None

    def _serve(self, server: LoopbackHTTPServer) -> None:
        if self.nice:
            # Linux: a thread's priority is its own, and the handler threads it starts inherit it.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), self.nice)
        server.serve_forever(poll_interval=0.05)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._cond:
            if alive:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _handle(self, handler: LoopbackHandler) -> None:
        """Read and answer one request (on a handler thread)."""
        raise NotImplementedError
