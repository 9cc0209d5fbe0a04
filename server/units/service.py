"""Units: enrolment, key rotation, revocation, the rate limiter of the unit API, and the
authentication of a unit's signed request.  Ingest is :mod:`server.units.ingest`."""

from __future__ import annotations

import base64
import threading
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, insert, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ebr_core.errors import EbrError
from ebr_core.keys import PublicKey
from ebr_core.record import GENESIS_HASH
from ebr_core.requestsig import (
    RequestSignatureError,
    SignedHeaders,
    verify_request,
)
from server.audit import trail as audit
from server.db import Alert, Nonce, Unit, UnitKey
from server.errors import (
    ClockSkew,
    Conflict,
    Forbidden,
    NotFound,
    Replayed,
    TooManyRequests,
    Unauthorized,
    UnitRevoked,
    Unprocessable,
)
from server.settings import Settings


def now() -> datetime:
    """The real clock (UTC): the default the app injects; services take ``at`` from it."""
    return datetime.now(UTC)


# Event kinds only the server writes: no unit's ledger holds them (the edge never closes a
# deviation; QA closes it on the server, server.quality).  A segment carrying one is refused.
SERVER_ONLY_KINDS = frozenset({"deviation.closed"})


def alert(
    db: Session,
    kind: str,
    unit_id: str | None,
    message: str,
    *,
    batch_id: str | None = None,
    site_id: str | None = None,
    at: datetime,
) -> None:
    db.add(
        Alert(
            kind=kind,
            unit_id=unit_id,
            message=message,
            created_at=at,
            batch_id=batch_id,
            site_id=site_id,
        )
    )


# -- units -------------------------------------------------------------------------------------


def _read_key(public_key_json: bytes) -> PublicKey:
    try:
        return PublicKey.from_bytes(public_key_json)
    except EbrError as e:
        raise Unprocessable(f"public key: {e}") from e


def _add_key(db: Session, unit_id: str, key: PublicKey, at: datetime) -> None:
    db.add(
        UnitKey(
            key_id=key.key_id,
            unit_id=unit_id,
            public_key=base64.b64encode(key.raw).decode(),
            status="active",
            added_at=at,
        )
    )


_SITE_INSERT = text(
    "INSERT INTO sites (site_id, name) VALUES (:s, :s) ON CONFLICT (site_id) DO NOTHING"
)


def enrol(
    db: Session,
    site_id: str,
    unit_id: str,
    public_key_json: bytes,
    *,
    at: datetime,
    actor: str = "system",
) -> Unit:
    """Enrol a unit (and its site, if new).  Idempotent for the site: two units of a new site
    enrolled at once both succeed (insert-or-ignore; PostgreSQL makes the second insert wait for
    the first and then do nothing, SQLite serialises writers).  The same unit or key enrolled
    twice at once: the second gets 409, never 500."""
    key = _read_key(public_key_json)
    if key.unit_id not in (None, unit_id):
        raise Unprocessable(f"the key is bound to unit {key.unit_id!r}, not {unit_id!r}")
    if db.get(Unit, unit_id) is not None:
        raise Conflict(f"unit {unit_id} is already enrolled (rotate its key instead)")
    if db.get(UnitKey, key.key_id) is not None:
        raise Conflict(f"key {key.key_id} is already enrolled for another unit")
    try:
        return _enrol(db, site_id, unit_id, key, actor, at)
    except IntegrityError as e:
        db.rollback()
        raise Conflict(
            f"unit {unit_id} or key {key.key_id} was enrolled at the same moment by another request"
        ) from e


def _enrol(
    db: Session, site_id: str, unit_id: str, key: PublicKey, actor: str, at: datetime
) -> Unit:
    db.execute(_SITE_INSERT, {"s": site_id})
    unit = Unit(
        unit_id=unit_id,
        site_id=site_id,
        status="active",
        head_seq=0,
        head_hash=GENESIS_HASH,
        checkpoint_seq=0,
        enrolled_at=at,
    )
    db.add(unit)
    db.flush()
    _add_key(db, unit_id, key, at)
    db.flush()
    audit.append(
        db,
        at=at,
        actor=actor,
        action="unit.enrolled",
        object_type="unit",
        object_id=unit_id,
        new={"site_id": site_id, "key_id": key.key_id},
    )
    return unit


def rotate(
    db: Session, unit_id: str, public_key_json: bytes, *, at: datetime, actor: str = "system"
) -> str:
    unit = get_unit(db, unit_id)
    key = _read_key(public_key_json)
    if db.get(UnitKey, key.key_id) is not None:
        raise Conflict(f"key {key.key_id} is already enrolled")
    retired = []
    for k in db.scalars(
        select(UnitKey).where(UnitKey.unit_id == unit.unit_id, UnitKey.status == "active")
    ):
        k.status = "retired"  # still verifies the history it signed; signs no new request
        retired.append(k.key_id)
    _add_key(db, unit_id, key, at)
    audit.append(
        db,
        at=at,
        actor=actor,
        action="unit.key_rotated",
        object_type="unit",
        object_id=unit_id,
        old={"active_keys": retired},
        new={"active_keys": [key.key_id]},
    )
    return key.key_id


def revoke(db: Session, unit_id: str, reason: str, *, at: datetime, actor: str = "system") -> None:
    unit = get_unit(db, unit_id)
    audit.append(
        db,
        at=at,
        actor=actor,
        action="unit.revoked",
        object_type="unit",
        object_id=unit_id,
        old={"status": unit.status},
        new={"status": "revoked"},
        reason=reason,
    )
    unit.status = "revoked"
    for k in db.scalars(select(UnitKey).where(UnitKey.unit_id == unit_id)):
        k.status = "revoked"
    alert(db, "unit.revoked", unit_id, f"unit {unit_id} revoked: {reason}", at=at)


def get_unit(db: Session, unit_id: str) -> Unit:
    unit = db.get(Unit, unit_id)
    if unit is None:
        raise NotFound(f"unit {unit_id} is not enrolled")
    return unit


def key_list_for(db: Session, unit_id: str) -> list[tuple[bytes, str | None]]:
    """Keys that verify this unit's checkpoints (active and retired, not revoked), as bytes:
    they may go to a worker process."""
    return [
        (base64.b64decode(k), unit_id)
        for k in db.scalars(
            select(UnitKey.public_key).where(
                UnitKey.unit_id == unit_id, UnitKey.status != "revoked"
            )
        )
    ]


# -- request authentication -------------------------------------------------------------------


class RateLimiter:
    """Token buckets by key (in memory: per API worker): per client address before a request's
    signature is checked, per unit after (so no one without the unit's key can spend the unit's
    budget).  At most ``max_keys`` buckets: full ones are forgotten first."""

    def __init__(
        self, rate: float, burst: int, what: str = "unit", max_keys: int = 100_000
    ) -> None:
        self.rate, self.burst, self.what, self.max_keys = rate, burst, what, max_keys
        self._state: dict[str, tuple[float, float]] = {}

    def check(self, key: str, t: float) -> None:
        """Refuse (429) if ``key``'s bucket is empty, without spending from it."""
        tokens, last = self._state.get(key, (float(self.burst), t))
        if min(self.burst, tokens + (t - last) * self.rate) < 1:
            raise TooManyRequests(
                f"{self.what} {key} sends more than {self.rate:g} refused requests/s; retry later"
            )

    def spend(self, key: str, t: float) -> None:
        """Spend one token from ``key``'s bucket, never below empty (a refused request)."""
        tokens, last = self._state.get(key, (float(self.burst), t))
        tokens = min(self.burst, tokens + (t - last) * self.rate)
        if key not in self._state and len(self._state) >= self.max_keys:
            self._prune(t)
        self._state[key] = (max(0.0, tokens - 1), t)

    def take(self, key: str, t: float) -> None:
        tokens, last = self._state.get(key, (float(self.burst), t))
        tokens = min(self.burst, tokens + (t - last) * self.rate)
        if tokens < 1:
            raise TooManyRequests(
                f"{self.what} {key} sends more than {self.rate:g} requests/s; retry later"
            )
        if key not in self._state and len(self._state) >= self.max_keys:
            self._prune(t)
        self._state[key] = (tokens - 1, t)

    def _prune(self, t: float) -> None:
        """Forget buckets that have refilled (forgetting them changes nothing)."""
        full = [
            k for k, (n, last) in self._state.items() if n + (t - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._state[k]
        if len(self._state) >= self.max_keys:  # a flood of distinct keys: start again
            self._state.clear()


class NonceSweep:
    """When this process next deletes expired nonces: at most once every ``every_s`` seconds
    (a request's transaction does it), not at every request.  A nonce outside the time window
    can never be replayed (the request's time is refused first), so deleting it late only keeps
    a row a little longer; deleting at every request made every request rescan the index's
    dead entries, and concurrent requests wait for each other's rows."""

    def __init__(self, every_s: float = 1.0) -> None:
        self.every_s = every_s
        self._next = 0.0
        self._lock = threading.Lock()

    def due(self, t: float) -> bool:
        with self._lock:
            if t < self._next:
                return False
            self._next = t + self.every_s
            return True


SWEEP = NonceSweep()

# The key and the unit it belongs to, in one read (a key names its unit: no other unit's row
# could make a request pass that this refuses).
_KEY_AND_UNIT = (
    select(
        UnitKey.unit_id, UnitKey.status, UnitKey.public_key, Unit.site_id,
        Unit.status.label("unit_status"), Unit.head_seq, Unit.head_hash, Unit.checkpoint_seq,
        Unit.enrolled_at,
    )
    .join(Unit, Unit.unit_id == UnitKey.unit_id)
    .where(UnitKey.key_id == bindparam("k"))
)
_NONCE_INSERT = insert(Nonce)


def authenticate(
    db: Session,
    settings: Settings,
    h: SignedHeaders,
    method: str,
    path: str,
    body: bytes,
    path_unit: str,
    *,
    at: datetime,
    revoked_alerts: audit.RefusalLimiter | None = None,
) -> Unit:
    """The unit that signed this request, or the refusal (401 bad or unknown signature, 403
    revoked or signed for another unit's path, 409 replayed nonce); ``at`` is the server's
    clock; ``revoked_alerts`` limits the alerts for requests of a revoked unit (one per unit a
    minute without it)."""
    if h.unit_id != path_unit:
        raise Forbidden(f"request signed by unit {h.unit_id} for the path of unit {path_unit}")
    # Every unit request comes here: one Core read and a Core insert, not two ORM loads and a
    # flush (which cost about three times as much CPU).  The unit is handed back as a
    # detached object for reading (the ingest locks and loads its own).
    key_row = db.execute(_KEY_AND_UNIT, {"k": h.key_id}).first()
    if key_row is None or key_row.unit_id != h.unit_id:
        raise Unauthorized(f"unit {h.unit_id} with key {h.key_id} is not enrolled")
    unit = Unit(
        unit_id=key_row.unit_id, site_id=key_row.site_id, status=key_row.unit_status,
        head_seq=key_row.head_seq, head_hash=key_row.head_hash,
        checkpoint_seq=key_row.checkpoint_seq, enrolled_at=key_row.enrolled_at,
    )  # fmt: skip
    revoked = unit.status == "revoked" or key_row.status == "revoked"
    if not revoked and key_row.status != "active":
        raise Unauthorized(f"key {h.key_id} was rotated out; sign with the unit's current key")
    t = int(at.timestamp())
    if abs(t - h.timestamp) > settings.clock_window_s:
        # the same check verify_request makes first, typed so that a unit can tell it apart
        raise ClockSkew(
            f"request time {h.timestamp} is {abs(t - h.timestamp)} s from the server's clock "
            f"(at most {settings.clock_window_s} s allowed)"
        )
    try:
        verify_request(
            PublicKey(base64.b64decode(key_row.public_key), h.unit_id),
            h,
            method,
            path,
            body,
            now=t,
            window=settings.clock_window_s,
        )
    except RequestSignatureError as e:
        raise Unauthorized(str(e)) from e
    if revoked:
        # Alerted only once the revoked key's own signature verifies (anyone can name a revoked
        # key), and at most once a minute per unit, counting: a flood raises no alert flood.
        n = (revoked_alerts or audit.RefusalLimiter()).take(h.unit_id, float(t))
        if n:
            why = f"{n} request(s) from revoked unit {h.unit_id} (key {h.key_id})"
            alert(db, "unit.revoked_request", h.unit_id, why, at=at)
            db.commit()
        raise UnitRevoked(f"unit {h.unit_id} (key {h.key_id}) is revoked")
    if SWEEP.due(t):
        db.execute(delete(Nonce).where(Nonce.seen_at < t - 2 * settings.clock_window_s))
    try:
        db.execute(_NONCE_INSERT, {"unit_id": h.unit_id, "nonce": h.nonce, "seen_at": t})
    except IntegrityError as e:
        db.rollback()
        raise Replayed(f"replayed request: nonce {h.nonce} was already used") from e
    return unit
