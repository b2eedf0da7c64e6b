"""A real HTTP receiver on a loopback port for the webhook tests, in a thread: it
answers 500 while told to fail, can be taken down and brought back on the same port,
and keeps every request it got (headers, body, what it answered; 0 for a request
cut off before its whole body came, which it does not answer)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from serverproc import free_port


@dataclass
class Delivery:
    headers: dict[str, str]
    body: bytes
    status: int
    #: the request's path and query, as the sender wrote them
    path: str = ""

    @property
    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.body)
        return out


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.fail_next = 0
        #: answer every request with a 307 to this URL instead
        self.redirect_to: str | None = None
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    if len(body) < length:
                        # the sender died mid-request (kill -9): nothing was delivered, and
                        # nobody is left to read an answer
                        receiver.deliveries.append(
                            Delivery({k.lower(): v for k, v in self.headers.items()}, body, 0)
                        )
                        return
                    status = 500 if receiver.fail_next > 0 else 204
                    if receiver.redirect_to is not None:
                        status = 307
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                    receiver.deliveries.append(
                        Delivery(
                            {k.lower(): v for k, v in self.headers.items()}, body, status, self.path
                        )  # fmt: skip
                    )
                self.send_response(status)
                if status == 307:
                    self.send_header("Location", str(receiver.redirect_to))
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def down(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.status == 204]

    def accepted_events(self) -> list[dict[str, Any]]:
        return [ev for d in self.accepted() for ev in d.json["events"]]

    def __enter__(self) -> Receiver:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()
