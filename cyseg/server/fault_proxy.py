"""An HTTP proxy that injects faults between a Cytomine client and a server, for tests and benchmarks.

    with FaultProxy(server.host, rate=0.15, seed=1) as proxy:
        Cytomine(proxy.host, ...)   # 15% of the requests meet a fault

A request chosen for a fault (drawn from a seeded random stream, among the requests `where` accepts;
`where` may also name the fault a request meets) meets one of:

- `error`: answered 502 or 503 without being forwarded (a busy gateway);
- `drop`: forwarded, its answer read, then the connection closed without an answer (the server
  acted, the client sees a failure);
- `cut`: forwarded, and its answer cut off half-way through the body;
- `delay`: forwarded after a pause of up to `max_delay_s`.

A request `hold` accepts waits until `release()` (the test does something meanwhile, e.g. kills the
client), then its connection is closed without forwarding it. A server that cannot be reached is a
502, as from a gateway; `upstream` may be changed while the proxy runs (a server restarted on
another port). The proxy listens on the loopback interface only and forwards only to a loopback
server; every socket has a timeout, so nothing waits forever. `log` records each request and its fault.
"""
from __future__ import annotations

import http.client
import ipaddress
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

ERROR, DROP, CUT, DELAY = "error", "drop", "cut", "delay"
FAULTS = (ERROR, DROP, CUT, DELAY)
HOLD, UNREACHABLE = "hold", "unreachable"  # what the log records for a held request, a server not answering
SOCKET_TIMEOUT_S = 60.0
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade"}

Where = Callable[[str, str], bool]  # (method, path with query) -> whether a request qualifies
Choose = Callable[[str, str], "bool | str"]  # a `Where`, or the name of the fault the request meets


@dataclass(frozen=True)
class Seen:
    """A request that went through the proxy, with the fault it met (None: none; a request the server did
    not answer is logged a second time, as UNREACHABLE)."""

    method: str
    path: str
    fault: str | None


def _loopback(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    address = socket.gethostbyname(parts.hostname or "")
    if not ipaddress.ip_address(address).is_loopback:
        raise ValueError(f"the fault proxy forwards to loopback servers only, not {url}")
    return address, parts.port or 80


class FaultProxy:
    """See the module's notes."""

    def __init__(self, upstream: str, rate: float = 0.0, seed: int = 0, *, faults: tuple[str, ...] = FAULTS,
                 where: Choose | None = None, max_delay_s: float = 0.2) -> None:
        self.upstream = upstream
        self.rate, self.faults, self.where, self.max_delay_s = rate, faults, where, max_delay_s
        self.hold: Where | None = None
        self.held, self._released = threading.Event(), threading.Event()
        self.log: list[Seen] = []
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)

    @property
    def upstream(self) -> str:
        return self._upstream

    @upstream.setter
    def upstream(self, url: str) -> None:
        self._address = _loopback(url)
        self._upstream = url

    @property
    def host(self) -> str:
        """The proxy's address, as given to `Cytomine(host, ...)`."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def faulted(self, where: Where | None = None) -> list[Seen]:
        """The requests that met a fault (those `where` accepts)."""
        return [s for s in list(self.log) if s.fault and (where is None or where(s.method, s.path))]

    def release(self) -> None:
        """Let a held request go (its connection is closed unanswered)."""
        self._released.set()

    def __enter__(self) -> "FaultProxy":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(SOCKET_TIMEOUT_S)

    def _decide(self, method: str, path: str) -> tuple[str | None, int, float]:
        """The fault of one request, its error status and its delay (drawn together, in request order)."""
        with self._lock:
            draw, status, delay = self._random.random(), self._random.choice((502, 503)), self._random.random()
            chosen = self._random.choice(self.faults)
            qualifies = True if self.where is None else self.where(method, path)
            fault = (qualifies if isinstance(qualifies, str) else chosen) if qualifies and draw < self.rate else None
            self.log.append(Seen(method, path, fault))
        return fault, status, delay * self.max_delay_s

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(*self._address, timeout=SOCKET_TIMEOUT_S)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = SOCKET_TIMEOUT_S

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, headers: list, body: bytes, cut: bool = False) -> None:
                self.send_response_only(status)
                for name, value in headers:
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[:len(body) // 2] if cut else body)
                if cut:
                    self._hang_up()

            def _hang_up(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                method, path = self.command, self.path
                if proxy.hold is not None and proxy.hold(method, path):
                    proxy.log.append(Seen(method, path, HOLD))
                    proxy.held.set()
                    proxy._released.wait(SOCKET_TIMEOUT_S)
                    return self._hang_up()
                fault, status, delay = proxy._decide(method, path)
                if fault == ERROR:
                    return self._answer(status, [("Content-Type", "application/json")],
                                        b'{"success": false, "message": "fault proxy: injected error"}')
                if fault == DELAY:
                    time.sleep(delay)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                try:
                    answer = proxy._forward(method, path, headers, body)
                except OSError:
                    proxy.log.append(Seen(method, path, UNREACHABLE))
                    return self._answer(502, [("Content-Type", "application/json")],
                                        b'{"success": false, "message": "fault proxy: server unreachable"}')
                if fault == DROP:
                    return self._hang_up()
                self._answer(*answer, cut=fault == CUT)

            do_GET = do_POST = do_PUT = do_DELETE = _serve

        return Handler
