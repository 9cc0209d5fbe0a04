"""The transparency log's public read API (no login, no patient data in any answer).

``/v1/log`` is a C2SP tlog-tiles prefix: ``checkpoint`` (the latest signed checkpoint, signed
first if the tree grew since the last one), ``tile/<L>/<N>[.p/<W>]`` and
``tile/entries/<N>[.p/<W>]``, so a witness (``ctgtp witness run --log <server>/v1/log``) or any
static mirror reads the log as files.  Beside those: the log's verifier key, consistency and
inclusion proofs as JSON, and ``.tlog-proof`` files (C2SP tlog-proof) for auditors.
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from ebr_core.tlog.checkpoint import Checkpoint
from ebr_core.tlog.errors import TileError
from ebr_core.tlog.merkle import consistency_proof, inclusion_proof
from ebr_core.tlog.note import SignedNote
from ebr_core.tlog.tiles import Tile, entry_bundle, parse_tile_path
from ebr_core.tlog.tlogproof import make_tlog_proof
from server.errors import LogRange, NotFound
from server.log import records, store
from server.log.receipts import b64 as _b64
from server.log.store import DbStore, LogKey

records.install()  # the listener that logs the server's records, wherever the app runs
router = APIRouter(prefix="/v1/log", tags=["transparency log"])

TEXT = "text/plain; charset=utf-8"
IMMUTABLE = {"Cache-Control": "public, max-age=31536000, immutable"}
FRESH = {"Cache-Control": "no-cache"}
MaxSize = 2**63 - 1


class ConsistencyProof(BaseModel):
    old: int
    new: int
    proof: list[str]  # base64 hashes


class InclusionProof(BaseModel):
    index: int
    size: int
    leaf: str  # base64 of the leaf's bytes (a ctgtp/tlog-entry/v1 entry)
    proof: list[str]


def _sessions(request: Request) -> sessionmaker[Session]:
    s = request.app.state.sessions
    assert isinstance(s, sessionmaker)
    return s


def _key(request: Request) -> LogKey:
    k = request.app.state.log_key
    assert isinstance(k, LogKey)
    return k


@router.get(
    "/checkpoint",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}},
                     "description": "the latest signed checkpoint (C2SP tlog-checkpoint)"}},
)  # fmt: skip
def checkpoint(request: Request) -> Response:
    with _sessions(request)() as db:
        cp = store.current_checkpoint(db, _key(request), request.app.state.clock())
        return Response(cp.note, media_type=TEXT, headers=FRESH)


@router.get(
    "/vkey",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}},
                     "description": "the log's verifier key (name+key ID+base64 key)"}},
)  # fmt: skip
def vkey(request: Request) -> Response:
    return Response(_key(request).verifier.vkey() + "\n", media_type=TEXT)


@router.get(
    "/tile/{path:path}",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}},
                     "description": "a tile or entry bundle (C2SP tlog-tiles)"}},
)  # fmt: skip
def tile(path: str, request: Request) -> Response:
    try:
        t = parse_tile_path("tile/" + path)
    except TileError as e:
        raise NotFound(str(e)) from e
    with _sessions(request)() as db:
        size = store.head(db).size
        if t.level is None:
            start = t.index * 256
            if start + t.width > size:
                raise NotFound(f"{t.path()}: the log has {size} entries")
            data = entry_bundle(store.leaves(db, start, start + t.width))
        else:
            got = store.tile_data(db, Tile(t.level, t.index, t.width), size)
            if got is None:
                raise NotFound(f"{t.path()}: not a tile of the log at size {size}")
            data = got
    return Response(data, media_type="application/octet-stream", headers=IMMUTABLE)


@router.get("/proof/consistency", response_model=ConsistencyProof)
def consistency(
    request: Request,
    old: Annotated[int, Query(ge=0, le=MaxSize)],
    new: Annotated[int, Query(ge=0, le=MaxSize)],
) -> Any:
    """The consistency proof from the tree of ``old`` entries to the tree of ``new``."""
    with _sessions(request)() as db:
        size = store.head(db).size
        if old > new or new > size:
            raise LogRange(
                f"consistency proof from size {old} to size {new}: needs old <= new <= {size} "
                "(the log's size)"
            )
        proof = store.with_store(db, new, lambda s: consistency_proof(s, old, new))
    return {"old": old, "new": new, "proof": _b64(proof)}


@router.get("/proof/inclusion", response_model=InclusionProof)
def inclusion(
    request: Request,
    index: Annotated[int, Query(ge=0, le=MaxSize)],
    size: Annotated[int, Query(ge=0, le=MaxSize)],
) -> Any:
    """Leaf ``index`` and its inclusion proof in the tree of ``size`` entries."""
    with _sessions(request)() as db:
        have = store.head(db).size
        if not index < size <= have:
            raise LogRange(
                f"inclusion proof of leaf {index} in a tree of size {size}: needs "
                f"index < size <= {have} (the log's size)"
            )
        proof = store.with_store(db, size, lambda s: inclusion_proof(s, index, size))
        leaf = DbStore(db, size).leaf(index)
    return {
        "index": index,
        "size": size,
        "leaf": base64.b64encode(leaf).decode("ascii"),
        "proof": _b64(proof),
    }


@router.get(
    "/proof/{index}.tlog-proof",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}},
                     "description": "leaf index's proof file (C2SP tlog-proof@v1) against the "
                                    "latest checkpoint"}},
)  # fmt: skip
def tlog_proof(index: int, request: Request) -> Response:
    """The offline proof that leaf ``index`` is in the log, against the latest checkpoint."""
    with _sessions(request)() as db:
        cp = store.current_checkpoint(db, _key(request), request.app.state.clock())
        if not 0 <= index < cp.size:
            raise LogRange(f"leaf {index} is not in the log's latest checkpoint (size {cp.size})")
        note = SignedNote.parse(cp.note.encode())
        assert Checkpoint.parse_text(note.text).size == cp.size
        proof = store.with_store(db, cp.size, lambda s: make_tlog_proof(s, index, note))
    return Response(
        proof.to_bytes(),
        media_type=TEXT,
        headers={"Content-Disposition": f'attachment; filename="log-{index}.tlog-proof"'},
    )
