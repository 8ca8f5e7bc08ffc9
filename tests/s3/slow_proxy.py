"""An HTTP proxy on loopback that forwards every request to an S3 endpoint and can hold the
response of one chosen request for a while (after the server has acted on it): how a test
makes "the object is stored, the client does not know yet" last long enough to matter."""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse


class SlowProxy:
    """``SlowProxy(upstream)``: ``endpoint`` is the proxy's URL; ``hold(seconds, match)``
    delays the response of the next request for which ``match(method, path)`` is true."""

    def __init__(self, upstream: str) -> None:
        u = urlparse(upstream)
        self._host, self._port = u.hostname, u.port
        self._rule: tuple[float, Callable[[str, str], bool]] | None = None
        self.held = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _forward(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else None
                c = http.client.HTTPConnection(proxy._host, proxy._port, timeout=60)
                c.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in self.headers.items():
                    c.putheader(k, v)
                c.endheaders()
                if body:
                    c.send(body)
                r = c.getresponse()
                data = r.read()
                c.close()
                rule = proxy._rule
                if rule is not None and rule[1](self.command, self.path):
                    proxy._rule = None
                    proxy.held.set()
                    time.sleep(rule[0])  # the point of this proxy: a slow answer
                self.send_response_only(r.status, r.reason)
                for k, v in r.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def hold(self, seconds: float, match: Callable[[str, str], bool]) -> None:
        """Delay the response of the next request that ``match(method, path)`` selects."""
        self.held.clear()
        self._rule = (seconds, match)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
