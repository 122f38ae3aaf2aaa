"""``--serve PORT``: the report and the two documents over HTTP, on 127.0.0.1 by default.

Only what a run publishes is served, read fresh from the output folder at each request (the
writers replace the files atomically, so a request sees one commit's file whole). The state
folder, and anything else in the output folder, is not: a request for it gets 404.
"""

from __future__ import annotations

import errno
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from core.errors import ConfigError

log = logging.getLogger(__name__)

#: Connections served at once; one more is closed at once (each holds a thread and a file descriptor:
#: a thousand idle ones took the watcher's descriptors, and it stopped, unable to list its folder).
MAX_CONNECTIONS = 32
#: A connection that sends or reads nothing for this long is closed (a client that went away, or
#: one that sends its request a byte at a time).
IDLE_SECONDS = 10.0

#: What is served, by URL path: the file's name in the output folder and its media type.
PUBLISHED = {
    "/": ("report.html", "text/html; charset=utf-8"),
    "/report.html": ("report.html", "text/html; charset=utf-8"),
    "/summary.json": ("summary.json", "application/json"),
    "/anomalies.json": ("anomalies.json", "application/json"),
}


class OutputServer:
    """A threaded HTTP server over an output folder, on a daemon thread, until ``close``."""

    def __init__(self, output_dir: Path, port: int, address: str = "127.0.0.1") -> None:
        handler = type("Handler", (_Handler,), {"output_dir": output_dir})
        try:
            self._server = _BoundedServer((address, port), handler)
        except OSError as exc:  # port taken, or an address this host does not have: a configuration problem
            hint = "choose another --serve port, or stop what listens there" if exc.errno == errno.EADDRINUSE \
                else "check the --serve port"
            raise ConfigError([f"--serve {port}: cannot listen on {address}:{port}: {exc.strerror or exc}; "
                               f"hint: {hint}"]) from None
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="omp-serve", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/"

    def __enter__(self) -> OutputServer:
        self._thread.start()
        log.info("serving the report on %s", self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


class BoundedConnections:
    """A mixin before a threading ``socketserver`` server (``--serve``'s, the metrics'): at most
    ``MAX_CONNECTIONS`` at once, one more closed at once, and quiet about clients that hang up.
    Pair it with a request handler whose ``timeout`` is ``IDLE_SECONDS``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.debug("serve: %s refused: %d connections open already", client_address[0], MAX_CONNECTIONS)
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        super().process_request(request, client_address)  # type: ignore[misc]

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)  # type: ignore[misc]
        finally:
            self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hangs up or goes silent is no error of the server's: no traceback on stderr.
        log.debug("serve: connection from %s ended early", client_address[0], exc_info=True)


class _BoundedServer(BoundedConnections, ThreadingHTTPServer):
    """``--serve``'s server."""


class _Handler(BaseHTTPRequestHandler):
    output_dir: Path
    server_version = "runpipeline"
    timeout = IDLE_SECONDS  # each read and write on the connection (StreamRequestHandler sets it on the socket)

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self._answer(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._answer(body=False)

    def _answer(self, *, body: bool) -> None:
        published = PUBLISHED.get(self.path.split("?", 1)[0])
        if published is None:
            self.send_error(HTTPStatus.NOT_FOUND, "not published: /, /report.html, /summary.json, /anomalies.json")
            return
        name, media_type = published
        try:
            content = (self.output_dir / name).read_bytes()
        except FileNotFoundError:
            self.send_error(HTTPStatus.NOT_FOUND, f"{name} is not written yet: the first commit writes it")
            return
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", media_type)
        self.send_header("Content-Length", str(len(content)))
        self.send_header("Cache-Control", "no-store")  # each refresh shows the latest commit
        self.end_headers()
        if body:
            self.wfile.write(content)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (http.server's signature)
        log.debug("serve: %s %s", self.address_string(), format % args)
