"""A flaky HTTP proxy on 127.0.0.1: drops, delays, duplicates requests and loses responses."""

from __future__ import annotations

import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx


class FlakyProxy:
    def __init__(
        self,
        upstream: str,
        *,
        seed: int = 7,
        drop: float = 0.15,
        lose_response: float = 0.15,
        duplicate: float = 0.15,
        delay: float = 0.15,
        max_delay: float = 0.05,
    ) -> None:
        rng = random.Random(seed)
        lock = threading.Lock()
        client = httpx.Client(base_url=upstream, timeout=30)
        self.stats = {"drop": 0, "lose_response": 0, "duplicate": 0, "delay": 0, "ok": 0}
        stats = self.stats

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_: object) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    roll = rng.random()
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in ("host", "content-length", "connection")
                }
                if roll < drop:
                    stats["drop"] += 1
                    self.close_connection = True
                    return  # the request never reaches the server
                roll -= drop
                if roll < delay:
                    stats["delay"] += 1
                    time.sleep(max_delay)
                r = client.request(self.command, self.path, content=body, headers=headers)
                roll -= delay
                if roll < duplicate:
                    stats["duplicate"] += 1
                    r = client.request(self.command, self.path, content=body, headers=headers)
                elif roll - duplicate < lose_response:
                    stats["lose_response"] += 1
                    self.close_connection = True
                    return  # the server stored it, the client never hears back
                stats["ok"] += 1
                self.send_response(r.status_code)
                for k, v in r.headers.items():
                    if k.lower() not in (
                        "content-length",
                        "transfer-encoding",
                        "connection",
                        "content-encoding",
                    ):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(r.content)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(r.content)
                self.close_connection = True

            do_GET = _forward
            do_POST = _forward

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
