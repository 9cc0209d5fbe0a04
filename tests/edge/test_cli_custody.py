"""Custody at the command line: labels printed, applied, destroyed and reconciled; a hand-off
signed by two people (two passwords on standard input), receipt, infusion and the shipper's
temperature log, as text and as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from pypdf import PdfReader

from .conftest import COI
from .test_cli import at, fails, home, ok, published, pw, started

__all__ = ["home", "published", "started"]

BAG = "]C0" + COI


def test_labels_print_apply_destroy_and_reconcile(started: Path, tmp_path: Path) -> None:
    out = tmp_path / "labels"
    # a shipper never carries a material's GTIN (TexMACS medium's) as its own: refused, no file
    r = at(started, "labels", "print", "--batch", "B-7", "--user", "op.alice",
           "--label", "shipper", "--gtin", "09506000134352", "--serial", "SHP-7",
           "--count", "3", "--out", str(out))  # fmt: skip
    assert r.exit_code != 0 and "09506000134352" in r.output and not out.exists()
    r = ok(at(started, "labels", "print", "--batch", "B-7", "--user", "op.alice",
              "--label", "shipper", "--sscc", "095060000000000077",
              "--count", "3", "--out", str(out)))  # fmt: skip
    assert r.stdout == f"printed 3 shipper label(s) for {COI} to {out}\n"
    assert (out / "B-7-shipper.png").read_bytes().startswith(b"\x89PNG")
    assert len(PdfReader(out / "B-7-shipper.pdf").pages) == 3
    r = ok(at(started, "labels", "apply", "--batch", "B-7", "--user", "op.alice",
              "--label", "shipper", "--json"))  # fmt: skip
    applied = json.loads(r.stdout)
    assert {k: applied[k] for k in ("outcome", "label", "count", "message")} == {
        "outcome": "labels_applied",
        "label": "shipper",
        "count": 1,
        "message": "1 shipper label(s) applied",
    }
    r = fails(at(started, "labels", "reconcile", "--batch", "B-7", "--user", "op.bob"), 1)
    assert r.stdout == "shipper: printed 3, applied 1, destroyed 0  MISMATCH\n"
    assert r.stderr == "Error: labels do not reconcile: recorded with a deviation\n"
    r = ok(at(started, "labels", "destroy", "--batch", "B-7", "--user", "op.alice",
              "--label", "shipper", "--count", "2", "--reason", "spares"))  # fmt: skip
    assert r.stdout == "2 shipper label(s) destroyed: spares\n"
    r = ok(at(started, "labels", "reconcile", "--batch", "B-7", "--user", "op.bob", "--json"))
    rec = json.loads(r.stdout)
    assert (rec["outcome"], rec["balanced"], rec["deviation_id"]) == (
        "labels_reconciled", True, None
    )  # fmt: skip
    assert rec["counts"]["shipper"] == {
        "printed": 3, "applied": 1, "destroyed": 2, "balanced": True
    }  # fmt: skip


def test_a_label_that_cannot_be_made_is_refused_before_anything_is_written(
    started: Path, tmp_path: Path
) -> None:
    out = tmp_path / "labels"
    r = fails(at(started, "labels", "print", "--batch", "B-7", "--user", "op.alice",
                 "--label", "shipper", "--gtin", "09506000134353", "--out", str(out)), 1)  # fmt: skip
    assert r.stderr == "Error: shipper label: GTIN 09506000134353 has a wrong check digit\n"
    assert not out.exists()


def test_the_custody_chain_at_the_command_line(started: Path, tmp_path: Path) -> None:
    def handoff(frm: str, to: str, giver: str, receiver: str, *extra: str) -> str:
        r = ok(at(started, "handoff", "--batch", "B-7", "--from", frm, "--to", to,
                  "--place", "dock", "--bag-scan", BAG, "--giver", giver, "--receiver",
                  receiver, "--password-stdin", *extra, stdin=pw(giver, receiver)))  # fmt: skip
        return r.stdout

    assert handoff("UNIT-01", "courier-7", "op.alice", "op.bob") == (
        f"handed over {COI} from UNIT-01 to courier-7 at dock\n"
    )
    second = json.loads(handoff("courier-7", "HOSP-1", "op.bob", "op.chen", "--json"))
    assert (second["outcome"], second["coi"]) == ("handed_over", COI)
    assert [(s["user_id"], s["meaning"]) for s in second["record"]["signatures"]] == [
        ("op.bob", "handed_over"),
        ("op.chen", "received"),
    ]
    stop = fails(at(started, "receive", "--batch", "B-7", "--user", "op.chen", "--site",
                    "HOSP-1", "--bag-scan", "]C0&/CHA999926ZZZ999", "--password-stdin",
                    stdin=pw("op.chen")), 1)  # fmt: skip
    assert stop.stderr.startswith("Error: STOP: bag scan does not match the batch's COI")
    r = ok(at(started, "receive", "--batch", "B-7", "--user", "op.chen", "--site", "HOSP-1",
              "--bag-scan", BAG, "--password-stdin", stdin=pw("op.chen")))  # fmt: skip
    assert r.stdout == f"{COI} received at HOSP-1\n"
    log = tmp_path / "logger.csv"
    log.write_text("timestamp,temperature_c\n" + "".join(
        f"2026-11-25T08:{m:02d}:00Z,{-190 if m < 10 or m > 17 else -140}\n" for m in range(30)
    ))  # fmt: skip
    r = fails(at(started, "shipper-log", "--batch", "B-7", "--user", "op.bob", "--shipper",
                 "SHP-1", "--csv", str(log)), 1)  # fmt: skip
    assert r.stdout.startswith("EXCURSION: ")
    assert r.stderr == "Error: 1 temperature excursion(s): deviations raised\n"
    cold = tmp_path / "cold.csv"
    cold.write_text("timestamp,temperature_c\n2026-11-25T09:00:00Z,-190\n")
    r = ok(at(started, "shipper-log", "--batch", "B-7", "--user", "op.bob", "--shipper",
              "SHP-2", "--csv", str(cold), "--limit", "-150.5"))  # fmt: skip
    assert r.stdout == "shipper SHP-2: no excursion (limit -150.5 °C, 300 s)\n"
    r = fails(at(started, "shipper-log", "--batch", "B-7", "--user", "op.bob", "--shipper",
                 "SHP-2", "--csv", str(cold), "--limit", "cold"), 2)  # fmt: skip
    assert "--limit 'cold' is not a number of °C" in r.stderr
    r = ok(at(started, "infuse", "--batch", "B-7", "--user", "op.alice", "--site", "HOSP-1",
              "--bag-scan", BAG, "--password-stdin", "--json", stdin=pw("op.alice")))  # fmt: skip
    infused = json.loads(r.stdout)
    assert infused["message"] == f"{COI} infused at HOSP-1: custody chain closed"
    assert infused["record"]["signatures"][0]["meaning"] == "administered"
    status = json.loads(ok(at(started, "status", "--batch", "B-7", "--json")).stdout)
    assert len(status["batch"]["deviations"]) == 2  # the wrong bag, the excursion
