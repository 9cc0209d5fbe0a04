"""The transparency log's public read API (no login, no patient data in any answer).

``/v1/log`` is a C2SP tlog-tiles prefix: ``checkpoint`` (the latest signed checkpoint, signed
first if the tree grew since the last one), ``tile/<L>/<N>[.p/<W>]`` and
``tile/entries/<N>[.p/<W>]``, so a witness (``ctgtp witness run --log <server>/v1/log``) or any
static mirror reads the log as files.  Beside those: the log's verifier key, consistency and
inclusion proofs as JSON, and ``.tlog-proof`` files (C2SP tlog-proof) for auditors.

Witnesses push their cosignatures back (``POST cosignatures``: the cosigned checkpoint note);
each is verified under a configured witness key (``log_witnesses``) against a checkpoint the
server signed, then kept and served with that checkpoint (``checkpoint``, proofs, receipts).
``witnessed`` says which checkpoint reached the quorum (``log_witness_quorum``).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy.orm import Session, sessionmaker

from ebr_core.tlog.checkpoint import Checkpoint
from ebr_core.tlog.cosignature import CosignatureVerifier
from ebr_core.tlog.errors import TileError, TlogError
from ebr_core.tlog.merkle import consistency_proof, inclusion_proof
from ebr_core.tlog.note import SignedNote
from ebr_core.tlog.tiles import Tile, entry_bundle, parse_tile_path
from ebr_core.tlog.tlogproof import make_tlog_proof
from server.errors import CosignatureRefused, LogRange, NotFound, UnknownWitness
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


class CosignaturesStored(BaseModel):
    size: int  # the checkpoint's tree size
    witnesses: list[str]  # the witnesses whose cosignature the note carried (all verified)
    new: list[str]  # of those, the ones not already held


class WitnessedCheckpoint(BaseModel):
    quorum: int  # cosignatures of configured witnesses a checkpoint needs to be witnessed
    witnesses: list[str]  # the configured witnesses' names
    size: int | None  # the latest checkpoint size that reached the quorum (None: none has)
    cosigned_by: list[str]  # the configured witnesses that cosigned that checkpoint
    latest_size: int | None  # the latest checkpoint's size (None: none signed yet)
    latest_cosigned_by: list[str]
    latest_witnessed: bool  # the latest checkpoint reached the quorum


class InclusionProof(BaseModel):
    index: int
    size: int
    leaf: str  # base64 of the leaf's bytes (a ctgtp/tlog-entry/v1 entry)
    proof: list[str]


def _sessions(request: Request) -> sessionmaker[Session]:
    s = request.app.state.sessions
    assert isinstance(s, sessionmaker)
    return s


def _witnesses(request: Request) -> list[CosignatureVerifier]:
    """The configured witnesses' verifiers (``log_witnesses``, checked when the server starts)."""
    return [CosignatureVerifier.from_vkey(k) for k in request.app.state.settings.log_witnesses]


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
        return Response(store.served_note(db, cp), media_type=TEXT, headers=FRESH)


@router.post("/cosignatures", response_model=CosignaturesStored)
def cosignatures(
    request: Request,
    body: Annotated[bytes, Body(media_type="text/plain",
                                description="the checkpoint note with the witness's cosignature "
                                            "line(s) (C2SP signed note)")],
) -> Any:  # fmt: skip
    """A witness pushes its cosignature of a checkpoint the server signed: the cosigned note
    (the server's checkpoint text and signature lines; lines under the log's own name
    are ignored).  Every other line must be a configured witness's cosignature that verifies
    (403 for a witness not configured, 422 for one that does not verify); nothing is kept
    unless all do.  The same cosignature twice is kept once."""
    key = _key(request)
    try:
        note = SignedNote.parse(body)
        cp = Checkpoint.parse_text(note.text)
    except TlogError as e:
        raise CosignatureRefused(f"the body is not a cosigned checkpoint note: {e}") from e
    if cp.origin != key.origin:
        raise CosignatureRefused(
            f"checkpoint origin {cp.origin[:100]!r} is not this log's {key.origin!r}"
        )
    known = {(w.name, w.key_id): w for w in _witnesses(request)}
    # Lines under the log's own name are not cosignatures: the text is checked against the
    # stored checkpoint instead of the log's signature.
    cosigs = [s for s in note.signatures if s.name != key.verifier.name]
    if not cosigs:
        raise CosignatureRefused("the note carries no cosignature line, only the log's signature")
    for s in cosigs:
        if (s.name, s.key_id) not in known:
            names = ", ".join(f"{n}+{k:08x}" for n, k in known) or "none"
            raise UnknownWitness(
                f"witness {s.name}+{s.key_id:08x} is not configured on this server "
                f"(log_witnesses: {names})"
            )
    with _sessions(request)() as db:
        stored = store.checkpoint_of(db, cp.size)
        if stored is None:
            raise CosignatureRefused(
                f"the server never signed a checkpoint of size {cp.size} "
                f"(latest: {store.head(db).size})"
            )
        mine = Checkpoint.parse_text(SignedNote.parse(stored.note.encode()).text)
        if mine.root != cp.root or note.text != mine.text():
            raise CosignatureRefused(
                f"checkpoint of size {cp.size} has root {base64.b64encode(cp.root).decode()}; "
                f"the server signed root {base64.b64encode(mine.root).decode()} for that size"
            )
        for s in cosigs:
            if not known[(s.name, s.key_id)].verify(note.text.encode(), s.signature):
                raise CosignatureRefused(
                    f"the cosignature by {s.name}+{s.key_id:08x} does not verify over the "
                    f"checkpoint of size {cp.size} under the configured witness key"
                )
        new = store.store_cosignatures(db, cp.size, cosigs, request.app.state.clock())
    return {"size": cp.size, "witnesses": sorted({s.name for s in cosigs}), "new": new}


@router.get("/witnessed", response_model=WitnessedCheckpoint)
def witnessed(request: Request) -> Any:
    """The latest checkpoint that reached the witness quorum, and whether the latest did."""
    settings = request.app.state.settings
    names = [w.name for w in _witnesses(request)]
    with _sessions(request)() as db:
        w = store.witnessed(db, names, settings.log_witness_quorum)
    return {
        "quorum": w.quorum,
        "witnesses": names,
        "size": w.size,
        "cosigned_by": w.witnesses,
        "latest_size": w.latest_size,
        "latest_cosigned_by": w.latest_witnesses,
        "latest_witnessed": w.latest_size is not None and w.size == w.latest_size,
    }


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
        note = SignedNote.parse(store.served_note(db, cp).encode())
        assert Checkpoint.parse_text(note.text).size == cp.size
        proof = store.with_store(db, cp.size, lambda s: make_tlog_proof(s, index, note))
    return Response(
        proof.to_bytes(),
        media_type=TEXT,
        headers={"Content-Disposition": f'attachment; filename="log-{index}.tlog-proof"'},
    )
