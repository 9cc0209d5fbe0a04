"""Clean failures: a ledger that cannot be written is a one-line error naming the path, reading
commands (status, export) work on a ledger they may only read, and an interrupted export leaves
nothing behind for long."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ebr_core.document import load_yaml, sign_document
from ebr_core.keys import UnitSigner
from ebr_core.mbr import parse_mbr
from edge.agent import init_home, open_agent
from edge.errors import LedgerClosedError, LedgerError
from edge.export import export_ledger
from edge.ledger import Append, Ledger

from .conftest import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534


def now() -> datetime:
    return datetime.now(UTC)


def test_a_readonly_ledger_reads_and_writes_nothing(tmp_path: Path) -> None:
    signer = UnitSigner.generate("UNIT-RO")
    led = Ledger.open(tmp_path / "e.db", signer, now)
    led.append_many([Append("reading.recorded", {"i": str(i)}) for i in range(5)])
    led.append("note.added", {"n": "1"})
    head = led.head
    led.close()
    (tmp_path / "e.db.lock").unlink()
    ro = Ledger.open(tmp_path / "e.db", signer, now, readonly=True)
    assert ro.head == head and ro.verify_all().event_count == 6
    assert [e.seq for e in ro.events_of_kind("note.added")] == [6]
    with pytest.raises(LedgerClosedError, match="opened for reading only"):
        ro.append("note.added", {"n": "2"})
    with pytest.raises(LedgerClosedError, match="opened read-only"):
        ro.set_meta("x", "y")
    ro.close()
    assert not (tmp_path / "e.db.lock").exists()  # not even a lock file
    with pytest.raises(LedgerError, match=f"there is no ledger at {tmp_path / 'none.db'}"):
        Ledger.open(tmp_path / "none.db", signer, now, readonly=True)


@pytest.fixture
def shared_home() -> Iterator[Path]:
    """An edge home outside pytest's private (0700) temporary folder, so another user can reach
    it; it holds one started batch."""
    base = Path(tempfile.mkdtemp(prefix="ctgtp-ro-"))
    os.chmod(base, 0o755)
    home = base / "home"
    pub_key = UnitSigner.generate("qa.approver")
    content = load_yaml((EXAMPLES / "car_t_mbr.yaml").read_text())
    mbr = parse_mbr(content)
    doc = sign_document(
        content, doc_type="mbr", doc_id=mbr.mbr_id, version=mbr.version, signer=pub_key,
        signed_at=now(),
    )  # fmt: skip
    (base / "mbr.signed.json").write_bytes(doc.to_bytes())
    (base / "publisher.pub").write_bytes(pub_key.public.to_json())
    init_home(
        home,
        unit_id="UNIT-01",
        mbr=base / "mbr.signed.json",
        publisher_key=base / "publisher.pub",
        users=EXAMPLES / "users.yaml",
        materials=EXAMPLES / "materials.yaml",
    )
    a = open_agent(home, now)
    a.ledger.append_many([Append("reading.recorded", {"i": str(i)}) for i in range(3)])
    a.close()
    try:
        yield home
    finally:
        shutil.rmtree(base, ignore_errors=True)


# Runs ctgtp edge as the user nobody: modules are imported first (the interpreter's own files
# may be out of that user's reach), then the process gives up root, then the command runs.
AS_NOBODY = """
import os, sys, _strptime, click
import edge.cli, edge.sync, edge.transports.mqtt, ebr_core.telemetry
os.setgroups([]); os.setgid(%(uid)d); os.setuid(%(uid)d)
try:
    edge.cli.edge.main(sys.argv[1:], prog_name="ctgtp edge")
except SystemExit as e:
    sys.exit(e.code)
"""


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", AS_NOBODY % {"uid": NOBODY}, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=60)


@pytest.mark.skipif(os.geteuid() != 0, reason="gives up root to meet a real permission error")
def test_a_ledger_it_may_not_write_is_one_line_and_status_and_export_still_work(
    shared_home: Path,
) -> None:
    home = shared_home
    for p in home.iterdir():
        os.chmod(p, 0o444)
    os.chmod(home, 0o555)  # the user nobody may read, and write nothing
    out = home.parent / "out"
    out.mkdir()
    os.chmod(out, 0o777)
    r = as_nobody("show", "--home", str(home), "--batch", "B1")  # opens as the writer
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr  # one line
    assert f"{home / 'edge.db.lock'}: Permission denied" in r.stderr
    r = as_nobody("status", "--home", str(home))
    assert r.returncode == 0, r.stderr
    assert "unit UNIT-01: 3 events" in r.stdout
    r = as_nobody("export", "--home", str(home), "--out", str(out / "ledger.jsonl"))
    assert r.returncode == 0, r.stderr
    assert "exported 3 events" in r.stdout
    r = as_nobody("export", "--home", str(home), "--out", str(home / "ledger.jsonl"))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert str(home) in r.stderr and "Permission denied" in r.stderr
    names = {"config.json", "edge.db", "edge.db.lock", "materials.yaml", "mbr.signed.json"}
    names |= {"publisher.pub", "unit.key", "unit.pub", "users.yaml"}
    assert {p.name for p in home.iterdir()} == names  # nothing was left behind


EXPORT_CHILD = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from ebr_core.keys import UnitSigner
from edge.export import export_ledger
from edge.ledger import Ledger
signer = UnitSigner.from_pem(Path(sys.argv[2]).read_bytes(), "UNIT-X")
led = Ledger.open(Path(sys.argv[1]), signer, lambda: datetime.now(UTC), readonly=True)
export_ledger(led, Path(sys.argv[3]))
"""


def _interrupt_export(tmp_path: Path, key: Path, out: Path, sig: signal.Signals) -> list[Path]:
    """Start an export in a child process, send it ``sig`` once its partial file exists; return
    the partial files seen."""
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    p = subprocess.Popen(
        [sys.executable, "-c", EXPORT_CHILD, str(tmp_path / "e.db"), str(key), str(out)],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    partial: list[Path] = []
    while not partial and time.monotonic() < deadline and p.poll() is None:
        partial = list(out.parent.glob("*partial*")) if out.parent.exists() else []
        time.sleep(0.005)
    p.send_signal(sig)
    p.wait(60)
    assert partial, "the export finished before it could be interrupted"
    assert not out.exists()  # never half a file under the real name
    return partial


def test_an_interrupted_export_leaves_no_partial_file_for_long(tmp_path: Path) -> None:
    signer = UnitSigner.generate("UNIT-X")
    led = Ledger.open(tmp_path / "e.db", signer, now)
    for g in range(40):
        led.append_many([Append("reading.recorded", {"g": g, "i": i}) for i in range(5_000)])
    led.close()
    key = tmp_path / "unit.key"
    key.write_bytes(signer.to_pem())
    out = tmp_path / "out" / "ledger.jsonl"
    # Ctrl-C: the export removes its partial file as it stops.
    _interrupt_export(tmp_path, key, out, signal.SIGINT)
    assert [x.name for x in out.parent.iterdir()] == []
    # Killed: the partial file stays until the next export into the folder, which removes it.
    _interrupt_export(tmp_path, key, out, signal.SIGKILL)
    led = Ledger.open(tmp_path / "e.db", signer, now, readonly=True)
    v = export_ledger(led, out)
    assert v.event_count == 200_000
    assert sorted(x.name for x in out.parent.iterdir()) == ["ledger.jsonl", "unit.pub"]
    led.close()
