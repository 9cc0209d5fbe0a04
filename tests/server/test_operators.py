"""Operators and their credential hashes are published to the edge for offline re-authentication:
`ctgtp edge users-pull` replaces the station's users file and records the change in its ledger."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from ctgtp.cli import cli
from edge.users import load_users

from .conftest import Server
from .qa import PASSWORD, TEMPORARY, add_people

EXAMPLES = Path(__file__).resolve().parents[2] / "edge" / "examples"


def run(*args: str) -> str:
    r = CliRunner().invoke(cli, list(args))
    assert r.exit_code == 0, r.output
    return r.output


def station(tmp_path: Path, unit_id: str) -> Path:
    """A station initialised with the example MBR (published here) and the example users."""
    pub = tmp_path / "pub"
    run("keys", "new", "qa.approver", "--out", str(pub))
    run(
        "edge", "mbr-publish", str(EXAMPLES / "car_t_mbr.yaml"), "--key",
        str(pub / "qa.approver.key"), "--signer", "qa.approver", "--out", str(pub / "mbr.json"),
    )  # fmt: skip
    home = tmp_path / "station"
    run(
        "edge", "init", "--home", str(home), "--unit", unit_id, "--mbr", str(pub / "mbr.json"),
        "--publisher-key", str(pub / "qa.approver.pub"), "--users",
        str(EXAMPLES / "users.yaml"), "--materials", str(EXAMPLES / "materials.yaml"),
    )  # fmt: skip
    return home


def enrol(server: Server, home: Path, site_id: str, unit_id: str) -> None:
    """The administrator enrols the station's unit key at a site."""
    with server.admin() as c:
        r = c.post(
            "/admin/units",
            json={"site_id": site_id, "unit_id": unit_id,
                  "public_key": (home / "unit.pub").read_text()},
        )  # fmt: skip
        assert r.status_code == 201, r.text


def test_station_pulls_its_sites_operators(server: Server, tmp_path: Path) -> None:
    add_people(
        server,
        {
            "op.ana": ("Ana Site-A", [("operator", "SITE-A")]),
            "op.ben": ("Ben Site-B", [("operator", "SITE-B")]),
            "op.cy": ("Cy Everywhere", [("operator", "*")]),
            "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
            "op.dan": ("Dan Disabled", [("operator", "SITE-A")]),
        },
    )
    with server.admin() as c:
        r = c.post("/v1/people/op.dan/status", json={"status": "disabled", "reason": "left"})
        assert r.status_code == 200
        # an operator whose password the administrator set, not yet changed by her
        r = c.post(
            "/v1/people",
            json={
                "user_id": "op.eve",
                "printed_name": "Eve New",
                "password": TEMPORARY,
                "roles": [{"role": "operator", "site_id": "SITE-A"}],
                "reason": "test set-up",
            },
        )
        assert r.status_code == 201, r.text
    home = station(tmp_path, "UNIT-OP")
    # Not enrolled yet: the server refuses, the local users file is untouched.
    before = (home / "users.yaml").read_text()
    r = CliRunner().invoke(cli, ["edge", "users-pull", "--home", str(home), "--server", server.url])
    assert r.exit_code != 0 and "refused" in r.output
    assert (home / "users.yaml").read_text() == before

    enrol(server, home, "SITE-A", "UNIT-OP")
    out = run("edge", "users-pull", "--home", str(home), "--server", server.url)
    assert "2 operators from the server: op.ana, op.cy" in out
    users = load_users((home / "users.yaml").read_text())
    assert sorted(users) == ["op.ana", "op.cy"]
    assert users["op.ana"].check_password(PASSWORD)
    assert not users["op.ana"].check_password("alice-demo-pass")
    shown = run("edge", "status", "--home", str(home), "--json")
    assert '"events": 1' in shown  # the users.updated event


def test_a_site_without_operators_does_not_empty_the_station(
    server: Server, tmp_path: Path
) -> None:
    """A pull that would leave the station with no operator is refused: nothing written, nothing
    recorded (before, users.yaml was replaced by an empty list and every operator locked out)."""
    add_people(server, {"op.ana": ("Ana Site-A", [("operator", "SITE-A")])})
    home = station(tmp_path, "UNIT-Z")
    enrol(server, home, "SITE-Z", "UNIT-Z")
    before = (home / "users.yaml").read_text()
    r = CliRunner().invoke(cli, ["edge", "users-pull", "--home", str(home), "--server", server.url])
    assert r.exit_code != 0
    assert "publishes no operators for this unit's site: users.yaml is kept" in r.output
    assert (home / "users.yaml").read_text() == before
    assert '"events": 0' in run("edge", "status", "--home", str(home), "--json")
