"""``p2psync``: the command line (DESIGN §9). Every command takes ``--home``; errors are one line."""

from __future__ import annotations

import importlib
import logging
import sys
import traceback
from pathlib import Path

import click
import platformdirs

from p2psync import __version__
from p2psync.cli.context import HOME_HELP
from p2psync.errors import P2PSyncError
from p2psync.node.home import LOG_FILE, resolve_home

#: Each command and where it is defined, imported only when it runs: a command then pays only for
#: the libraries it uses (``--version`` for none, a report not for the network or the ORM).
COMMANDS = {
    "init": "office_commands:init_cmd", "branch": "office_commands:branch",
    "group": "books_commands:group", "ledger": "books_commands:ledger", "voucher": "books_commands:voucher",
    "report": "books_commands:report", "conflicts": "books_commands:conflicts_cmd",
    "rebuild": "books_commands:rebuild_cmd", "demo": "demo:demo_cmd",
    "invite": "trust_commands:invite_cmd", "join": "trust_commands:join_cmd",
    "settings": "trust_commands:settings_cmd", "revoke": "trust_commands:revoke_cmd",
    "quarantine": "trust_commands:quarantine_cmd", "sync": "trust_commands:sync_cmd",
    "status": "trust_commands:status_cmd", "restart": "trust_commands:restart_cmd",
    "run": "serve_commands:run_cmd", "dashboard": "serve_commands:dashboard_cmd", "relay": "relay_command:relay_cmd",
    "backup": "recovery_commands:backup_cmd", "restore": "recovery_commands:restore_cmd",
    "doctor": "recovery_commands:doctor_cmd", "service": "service_commands:service_group",
    "audit": "audit_commands:audit_cmd", "inter-office": "interoffice_commands:inter_office_cmd",
    "scope": "scope_commands:scope_group",
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported when named (click's documented lazy-loading pattern)."""

    def __init__(self, *args: object, lazy: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy:
            module, name = self.lazy[cmd_name].split(":")
            command = getattr(importlib.import_module(f"p2psync.cli.{module}"), name)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

EXIT_ERROR = 1
EXIT_INTERNAL = 70


@click.group(cls=LazyGroup, lazy=COMMANDS, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="p2psync")
@click.option("-v", "--verbose", count=True, help="More log detail on stderr (-v info, -vv debug).")
@click.option("--home", default=None, metavar="DIR", help=HOME_HELP)
@click.pass_context
def cli(ctx: click.Context, verbose: int, home: str | None) -> None:
    """Peer-to-peer, end-to-end encrypted sync of accounting books between a head office and its
    branches."""
    ctx.ensure_object(dict)
    ctx.obj["verbose"] = verbose
    ctx.obj["home"] = home


#: Receives tracebacks of bugs: written to the log file in the home, never to the terminal.
crash_log = logging.getLogger("p2psync.crash")
crash_log.propagate = False
crash_log.addHandler(logging.NullHandler())


def _setup_logging(home: Path | None, verbose: int) -> None:
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setLevel(logging.WARNING - 10 * min(verbose, 2))
    stderr.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(stderr)
    log_dir = home if home is not None and home.is_dir() else _fallback_log_dir()
    if log_dir is not None:
        file_handler = logging.FileHandler(log_dir / LOG_FILE, encoding="utf-8")
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)
        crash_log.addHandler(file_handler)


def _fallback_log_dir() -> Path | None:
    """Where bugs are logged when the command has no home yet (init, join, a mistyped --home)."""
    try:
        path = Path(platformdirs.user_log_dir("p2psync", appauthor=False))
        path.mkdir(parents=True, exist_ok=True)
        return path
    except OSError:
        return None


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command, turning every refusal into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    home = _home_from_args(args)
    _setup_logging(home, sum(a.count("v") for a in args if a.startswith("-v") or a == "--verbose"))
    try:
        cli.main(args=args, prog_name="p2psync", standalone_mode=False)
    except click.exceptions.Abort:
        _error("aborted")
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        _error(exc.format_message())
        sys.exit(exc.exit_code)
    except P2PSyncError as exc:
        _error(str(exc))
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: keep the detail in the log, not on the user's screen
        crash_log.error("internal error\n%s", traceback.format_exc())
        files = [h.baseFilename for h in crash_log.handlers if isinstance(h, logging.FileHandler)]
        where = f"; details in {files[0]}" if files else ""
        _error(f"internal error: {type(exc).__name__}: {exc}{where}")
        sys.exit(EXIT_INTERNAL)


def _error(message: str) -> None:
    """One ``error:`` line on stderr (rich, the renderer, is imported only when there is one to show)."""
    from p2psync.cli import render

    render.error(message)


def _home_from_args(args: list[str]) -> Path | None:
    for i, arg in enumerate(args):
        if arg == "--home" and i + 1 < len(args):
            return resolve_home(args[i + 1])
        if arg.startswith("--home="):
            return resolve_home(arg.split("=", 1)[1])
    try:
        return resolve_home(None)
    except Exception:
        return None

