"""The `logd` command. `logd serve` runs the server; the client commands live in
`logd.cli.commands` so that this module stays about wiring."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from logd import __version__
from logd.cli.commands import COMMANDS
from logd.errors import LogdError
from logd.server.config import Config


def _serve_options(func: Any) -> Any:
    """One `--flag` per Config setting, documented with its env var and default."""
    for f in reversed(Config.settings()):
        if not f.metadata["flag"]:
            continue
        default = f.default
        if isinstance(default, tuple):
            default = f"{default[0]}:{default[1]}"
        shown = "" if default is None else f" [default: {default}]"
        func = click.option(
            "--" + f.name.replace("_", "-"),
            f.name,
            metavar="VALUE",
            default=None,
            help=f"{f.metadata['help']} Env: LOGD_{f.name.upper()}.{shown}",
        )(func)
    return func


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="logd")
def main() -> None:
    """logd: cheap, real-time, secure logging. Writes are signed UDP, reads are HTTP."""


for _command in COMMANDS:  # send, query, tail, hits, ping, info
    main.add_command(_command)


@main.command(
    epilog=(
        "Secrets: LOGD_READ_SECRET and LOGD_WRITE_SECRET (env only), or --secrets-file; with "
        "none set, dev mode creates random ones in ~/.config/logd/dev-secrets.env (0600). "
        "Config file: --config, LOGD_CONFIG, or logdrc.yml found from the working directory "
        "upwards; its keys are the flag names with underscores, plus `rings:` for per-ring "
        "sizes and `alerts:`/`notify:` for alert rules. Precedence: flag > env > file > "
        "default. SIGHUP reloads the secrets and the alert rules."
    )
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (YAML). Env: LOGD_CONFIG.",
)
@_serve_options
def serve(config_path: Path | None, **flags: str | None) -> None:
    """Run the logd server in the foreground until SIGTERM or Ctrl-C."""
    try:
        from logd.server.app import run
        from logd.server.logsetup import setup_logging
    except ModuleNotFoundError as err:
        fail(
            f"logd serve needs the server extra ({err.name} is not installed); "
            "install it with: pip install 'logd[server]'",
            code=2,
        )

    try:
        config = Config.load(
            file=config_path,
            environ=os.environ,
            argv={k: v for k, v in flags.items() if v is not None},
        )
        setup_logging(config.log_level)
        run(config)
    except LogdError as err:
        fail(str(err), code=2)
    except OSError as err:
        fail(f"cannot start: {err.strerror or err} (is another logd using the port?)")
    except KeyboardInterrupt:
        pass


def fail(sentence: str, code: int = 1) -> NoReturn:
    click.echo(f"logd: {sentence}", err=True)
    sys.exit(code)
