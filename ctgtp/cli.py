"""``ctgtp`` root command.  Groups are imported only when used, so ``ctgtp verify`` does not pay
for FastAPI or OpenCV."""

from __future__ import annotations

import importlib
import sys

import click

# name -> "module:attribute" of a click command or group
GROUPS: dict[str, tuple[str, str]] = {
    "verify": ("ctgtp.core_cli:verify", "Verify an exported ledger file offline (auditor)."),
    "scan": ("ctgtp.scan_cli:scan", "Parse and check barcode data (GS1, ISBT 128)."),
    "keys": ("ctgtp.core_cli:keys", "Make and inspect unit signing keys."),
    "edge": ("edge.cli:edge", "The edge agent an operator runs on a production unit."),
    "server": ("server.cli:server", "The control-site server."),
    "sim": ("firmware_sim.cli:sim", "Simulated devices for tests and demos."),
    "demo": ("ctgtp.demo:demo", "Run the end-to-end demonstration."),
    "fleet": ("ctgtp.fleet:fleet", "Soak: a fleet of units syncing to one server."),
}
GROUPS["spec"] = ("ctgtp.spec_cli:spec", "Check specifications and evaluate results.")
GROUPS["witness"] = (
    "witness.cli:witness",
    "Witness a transparency log: check and cosign its checkpoints.",
)


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(GROUPS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in GROUPS:
            return None
        target, _ = GROUPS[cmd_name]
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name == module_name:
                raise click.ClickException(f"'{cmd_name}' is not available in this build") from e
            raise
        cmd = getattr(module, attr)
        assert isinstance(cmd, click.Command)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, GROUPS[name][1]) for name in self.list_commands(ctx)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup)
@click.version_option(package_name="ctgtp-ebr")
def cli() -> None:
    """Traceability and electronic batch records for cell and gene therapy manufacturing."""


def main() -> None:
    cli(prog_name="ctgtp")


if __name__ == "__main__":  # pragma: no cover
    main()
    sys.exit(0)
