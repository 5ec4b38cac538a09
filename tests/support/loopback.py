"""A threaded HTTP server on a free loopback port, for replayed and hostile servers."""

from __future__ import annotations

import contextlib
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 refuses connections when the accepting thread is starved
    # (a loaded CI machine): a replayed server must not look down for that reason.
    request_queue_size = 128


@contextlib.contextmanager
def http_server(
    handler: type[BaseHTTPRequestHandler], *, tls: ssl.SSLContext | None = None, **attrs: object
) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (``attrs`` set on the server, for the handler to read
    as ``self.server.NAME``); yields the base URL ``http://127.0.0.1:PORT``, or
    ``https://...`` when ``tls`` (a server-side context with its certificate) is given."""
    httpd = _Server(("127.0.0.1", 0), handler)
    if tls is not None:
        httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
    httpd.daemon_threads = True
    for name, value in attrs.items():
        setattr(httpd, name, value)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)
