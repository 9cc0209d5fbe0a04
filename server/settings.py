"""Server settings (environment variables prefixed ``CTGTP_SERVER_``, or a ``.env`` file)."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ebr_core.errors import EbrError
from ebr_core.tlog.cosignature import CosignatureVerifier


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CTGTP_SERVER_", env_file=".env", extra="ignore")

    # SQLite is the embedded default; PostgreSQL: postgresql+psycopg://user@host:port/db
    database_url: str = "sqlite:///server-data/server.db"
    data_dir: Path = Path("server-data")
    admin_token: str = ""  # bearer token for the admin API (enrolment); empty: admin API off
    max_body_bytes: int = 8 * 1024 * 1024  # compressed request body (413 beyond)
    max_segment_bytes: int = 64 * 1024 * 1024  # decompressed segment (413 beyond)
    max_segment_events: int = 50_000
    # Worker processes that verify the second half of a large segment (0: verify in-process).
    verify_workers: int = 1
    parallel_verify_min_lines: int = 4_000  # smaller segments are not worth the hand-off
    # The worker's share of a large segment: the larger, later part, because this process
    # stores the first part while the worker verifies the rest.
    verify_worker_share: float = 0.6
    rate_per_second: float = 50.0  # requests per unit per second (429 beyond)
    rate_burst: int = 100
    clock_window_s: int = 300  # accepted skew of a unit's request time
    token_ttl_s: int = 900  # a person's session token lives 15 minutes
    licence_warning_days: int = 30  # alert this long before a transfer licence expires
    max_failed_logins: int = 5  # consecutive failures (login or e-signature) that lock an account
    # -- unit API and ingest hardening (issue 18) --
    # Events dated more than this ahead of the server's clock raise a clock.ahead alert.
    clock_skew_s: int = 300
    # Requests per client address per second before a unit's signature is checked (429 beyond);
    # the per-unit limit above applies once the signature has verified.
    address_rate_per_second: float = 200.0
    address_rate_burst: int = 400
    # Request body of every route but the unit API (413 beyond; the unit API: max_body_bytes).
    max_api_body_bytes: int = 1024 * 1024
    # Refused unit signatures and replays: at most one audit row per (unit or address, kind) in
    # this many seconds, counting the others.
    failure_audit_interval_s: int = 60
    # Password checks (argon2id, ~0.1 s and 64 MiB each) running at once, over login, e-signature
    # and password changes; a request that finds them all busy is answered 503 with Retry-After.
    password_checks_max: int = 4
    # The transparency log's origin (issue 24): the first line of its checkpoints and the name of
    # its note key (no spaces, no '+'); a deployment names its own, e.g. "ebr.example.com/log".
    log_origin: str = "ctgtp-server.local/log"
    # Witnesses (issue 24): their cosignature verifier keys as `ctgtp witness vkey` prints them
    # (name+hex(key ID)+base64(0x04 || public key)); CTGTP_SERVER_LOG_WITNESSES takes a JSON list.
    # Only these witnesses may push cosignatures (POST /v1/log/cosignatures).  A checkpoint
    # cosigned by fewer than log_witness_quorum of them is shown as unwitnessed (0: none needed).
    log_witnesses: list[str] = []
    log_witness_quorum: int = 0

    @field_validator("log_witnesses")
    @classmethod
    def _witness_keys(cls, keys: list[str]) -> list[str]:
        names: set[str] = set()
        for i, k in enumerate(keys):
            try:
                v = CosignatureVerifier.from_vkey(k.strip())
            except EbrError as e:
                raise ValueError(
                    f"log_witnesses[{i}] {k[:60]!r} is not a witness verifier key "
                    f"(name+hex(key ID)+base64(0x04 || Ed25519 key), as `ctgtp witness vkey` "
                    f"prints it): {e}"
                ) from e
            if len(v.name) > 200:
                raise ValueError(f"log_witnesses[{i}]: witness name is longer than 200 characters")
            if v.name in names:
                raise ValueError(f"log_witnesses[{i}]: witness {v.name!r} is named twice")
            names.add(v.name)
        return [k.strip() for k in keys]

    @model_validator(mode="after")
    def _quorum(self) -> Settings:
        if not 0 <= self.log_witness_quorum <= len(self.log_witnesses):
            raise ValueError(
                f"log_witness_quorum {self.log_witness_quorum} must be between 0 and the number "
                f"of log_witnesses ({len(self.log_witnesses)})"
            )
        return self
