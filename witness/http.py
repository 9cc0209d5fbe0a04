"""Reading a tiled log over HTTP (c2sp.org/tlog-tiles): ``<prefix>/checkpoint`` and tiles; and
pushing a cosignature back to a ctgtp server (``POST <prefix>/cosignatures``).

The only module of the witness that touches the network.  A missing tile (404) is None, so
the tile reader can fall back from a partial tile to the full one; anything else that is not
200 is a :class:`~witness.errors.FetchError`.  Responses are size-capped: a log cannot make
the witness read without bound.
"""

from __future__ import annotations

import httpx

from witness.errors import FetchError, PushError

MAX_CHECKPOINT_BYTES = 1 << 16
MAX_TILE_BYTES = 256 * 32


class LogClient:
    def __init__(self, prefix: str, client: httpx.Client) -> None:
        self.prefix = prefix.rstrip("/")
        self.client = client

    def _get(self, path: str, limit: int) -> bytes | None:
        url = f"{self.prefix}/{path}"
        try:
            with self.client.stream("GET", url) as r:
                if r.status_code == 404:
                    return None
                if r.status_code != 200:
                    raise FetchError(f"GET {url}: HTTP {r.status_code}, expected 200")
                body = bytearray()
                for chunk in r.iter_bytes():
                    body += chunk
                    if len(body) > limit:
                        raise FetchError(f"GET {url}: more than {limit} bytes")
                return bytes(body)
        except httpx.HTTPError as e:
            raise FetchError(f"GET {url}: {type(e).__name__}: {e}") from e

    def checkpoint(self) -> bytes:
        data = self._get("checkpoint", MAX_CHECKPOINT_BYTES)
        if data is None:
            raise FetchError(f"GET {self.prefix}/checkpoint: HTTP 404, the log has no checkpoint")
        return data

    def tile(self, path: str) -> bytes | None:
        return self._get(path, MAX_TILE_BYTES)

    def push(self, note: bytes) -> str:
        """POST the cosigned checkpoint ``note`` to ``<prefix>/cosignatures`` (a ctgtp server's
        simple push: the note carries the checkpoint's text, the log's signature and the
        witness's cosignature line).  The server's answer; a refusal is a PushError naming
        its status and the problem's detail."""
        url = f"{self.prefix}/cosignatures"
        try:
            r = self.client.post(url, content=note, headers={"Content-Type": "text/plain"})
        except httpx.HTTPError as e:
            raise PushError(f"POST {url}: {type(e).__name__}: {e}") from e
        if r.status_code != 200:
            detail = r.text[:500]
            try:
                got = r.json()
                if isinstance(got, dict) and "detail" in got:
                    detail = str(got["detail"])[:500]
            except ValueError:
                pass
            raise PushError(f"POST {url}: HTTP {r.status_code}: {detail}")
        return r.text
