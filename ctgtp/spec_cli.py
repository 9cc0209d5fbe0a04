"""``ctgtp spec``: check, publish and evaluate specifications."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click
import orjson

from ebr_core.document import DocumentError, load_yaml, open_document, sign_document
from ebr_core.errors import EbrError
from ebr_core.keys import Keyring, PublicKey, UnitSigner
from ebr_core.spec import evaluate, parse_spec
from ebr_core.spec.model import Spec

EXISTING = click.Path(exists=True, dir_okay=False, path_type=Path)


def _load(path: Path, publisher_key: Path | None) -> Spec:
    data = path.read_bytes()
    try:
        if publisher_key is not None or data.lstrip().startswith(b"{"):
            keys = (
                Keyring([PublicKey.from_bytes(publisher_key.read_bytes())])
                if publisher_key
                else None
            )
            if keys is None:
                raise DocumentError("a signed specification needs --publisher-key to be checked")
            content = open_document(data, keys, doc_type="spec").content
        else:
            content = load_yaml(data)
        return parse_spec(content)
    except EbrError as e:
        raise click.ClickException(f"{path.name}: {e}") from e


@click.group()
def spec() -> None:
    """Check specifications and evaluate results."""


@spec.command()
@click.argument("spec_file", type=EXISTING)
@click.option("--publisher-key", type=EXISTING, default=None)
def check(spec_file: Path, publisher_key: Path | None) -> None:
    """Validate a specification (YAML, or a signed envelope with --publisher-key)."""
    s = _load(spec_file, publisher_key)
    click.echo(
        f"OK {s.spec_id} v{s.version}: {len(s.attributes)} baseline attributes; "
        f"overlays {', '.join(sorted(s.overlays))}"
    )


@spec.command()
@click.argument("spec_yaml", type=EXISTING)
@click.option("--key", "key_path", type=EXISTING, required=True)
@click.option("--signer", required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def publish(spec_yaml: Path, key_path: Path, signer: str, out: Path) -> None:
    """Sign a specification with a QA approver's key."""
    from datetime import UTC, datetime

    s = _load(spec_yaml, None)
    try:
        doc = sign_document(
            load_yaml(spec_yaml.read_bytes()),
            doc_type="spec",
            doc_id=s.spec_id,
            version=s.version,
            signer=UnitSigner.from_pem(key_path.read_bytes(), signer),
            signed_at=datetime.now(UTC),
        )
    except EbrError as e:
        raise click.ClickException(str(e)) from e
    out.write_bytes(doc.to_bytes())
    click.echo(f"published {s.spec_id} v{s.version} signed by {signer}: {out}")


@spec.command("evaluate")
@click.argument("spec_file", type=EXISTING)
@click.argument("results_file", type=EXISTING)
@click.option("--jurisdiction", "-j", required=True, help="e.g. EU, US, UK")
@click.option("--publisher-key", type=EXISTING, default=None)
@click.option("--json", "as_json", is_flag=True)
def evaluate_cmd(
    spec_file: Path,
    results_file: Path,
    jurisdiction: str,
    publisher_key: Path | None,
    as_json: bool,
) -> None:
    """Print per-attribute verdicts and the disposition candidate; exit 0 if releasable or
    conditional, 2 if incomplete, 3 if not releasable."""
    s = _load(spec_file, publisher_key)
    try:
        results: dict[str, Any] = load_yaml(results_file.read_bytes())
        ev = evaluate(s, results, jurisdiction)
    except EbrError as e:
        raise click.ClickException(str(e)) from e
    if as_json:
        click.echo(
            orjson.dumps(ev.to_json() | {"hash": ev.hash()}, option=orjson.OPT_INDENT_2).decode()
        )
    else:
        click.echo(f"{s.spec_id} v{s.version} in {jurisdiction}: {ev.disposition}")
        for v in ev.verdicts:
            click.echo(
                f"  {v.status:8} {v.attribute:15} {v.explanation}"
                + (f"  [{v.clause}]" if v.clause else "")
            )
    sys.exit({"releasable": 0, "conditional": 0, "incomplete": 2}.get(ev.disposition, 3))
