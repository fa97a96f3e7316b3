"""``p2psync``: the command line (DESIGN §9). Every command takes ``--home``; errors are one line."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import click
import platformdirs

from p2psync import __version__
from p2psync.cli import render
from p2psync.cli.audit_commands import audit_cmd, audit_trail_cmd
from p2psync.cli.books_commands import (
    conflicts_cmd,
    group,
    ledger,
    rebuild_cmd,
    report,
    voucher,
)
from p2psync.cli.context import HOME_HELP, home_option, json_option, open_node
from p2psync.cli.demo import demo_cmd
from p2psync.cli.recovery_commands import backup_cmd, doctor_cmd, restore_cmd
from p2psync.cli.relay_command import relay_cmd
from p2psync.cli.scope_commands import scope_group
from p2psync.cli.serve_commands import dashboard_cmd, run_cmd
from p2psync.cli.service_commands import service_group
from p2psync.cli.trust_commands import (
    invite_cmd,
    join_cmd,
    quarantine_cmd,
    restart_cmd,
    revoke_cmd,
    settings_cmd,
    status_cmd,
    sync_cmd,
)
from p2psync.errors import P2PSyncError
from p2psync.node import Node, roster, views
from p2psync.node.home import KEYS_DIR, LOG_FILE, ROOT_KEY_FILE, resolve_home

EXIT_ERROR = 1
EXIT_INTERNAL = 70


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
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


@cli.command("init")
@click.option("--head-office", "head_office", is_flag=True, help="Create the organisation at its head office.")
@click.option("--company", required=True, help="The company's name.")
@click.option("--office", default="HO", show_default=True, help="This office's code.")
@click.option("--name", "office_name", default="Head Office", show_default=True, help="This office's name.")
@home_option
def init_cmd(home: str | None, head_office: bool, company: str, office: str, office_name: str) -> None:
    """Create a new organisation at its head office."""
    if not head_office:
        raise P2PSyncError("a branch office is set up with 'p2psync join CODE'; use --head-office at the head office")
    path = resolve_home(home)
    node = Node.create_head(path, company, office, office_name)
    try:
        render.info(f"Created {node.identity.company}: head office {node.identity.office} in {path}")
        render.info(f"Registration ID: {node.registration_id}")
        render.info(f"Back up {path / KEYS_DIR / ROOT_KEY_FILE} offline now: it is the organisation's root key.")
    finally:
        node.close()


@cli.group("branch")
def branch() -> None:
    """Branch master: the offices of the organisation."""


@branch.command("add")
@click.argument("code")
@click.argument("name")
@home_option
def branch_add(home: str | None, code: str, name: str) -> None:
    """Add branch CODE named NAME (its data configuration name)."""
    with open_node(home) as node:
        office = node.add_office(code, name)
        render.info(f"Added branch {office.code} ({office.name})")


@branch.command("list")
@json_option
@home_option
def branch_list(home: str | None, as_json: bool) -> None:
    """List the offices."""
    with open_node(home) as node:
        rows = views.offices(node)
    if as_json:
        render.print_json(rows)
    else:
        render.table("Offices", ["Code", "Name", "Role"], [[r["code"], r["name"], r["role"]] for r in rows])


@branch.command("nodes")
@json_option
@home_option
def branch_nodes(home: str | None, as_json: bool) -> None:
    """List the member nodes: office, series, when enrolled, when last seen here."""
    with open_node(home) as node:
        rows = roster.nodes(node)
    if as_json:
        render.print_json(rows)
        return
    render.table("Nodes", ["Node", "Office", "Series", "Enrolled (UTC)", "Last seen (UTC)", "Entries", "State"],
                 [[r["node"][:16], r["office"], r["series"], _minute(r["enrolled_at"]), _minute(r["last_seen"]) or ("-" if r["this_node"] else "never"),
                   r["entries"], _state(r)] for r in rows], numeric={2, 5})
    if any(_state(r) == NEVER_ONLINE for r in rows):
        render.info("Remove a node that never came online with 'p2psync branch remove-node NODE'.")


NEVER_ONLINE = "never came online"


def _state(row: dict[str, Any]) -> str:
    if row["this_node"]:
        return "this node"
    if row["revoked"]:
        return "revoked"
    return "active" if row["came_online"] else NEVER_ONLINE


def _minute(at: str) -> str:
    return at[:16].replace("T", " ")


@branch.command("remove-node")
@click.argument("node_id", metavar="NODE")
@home_option
def branch_remove_node(home: str | None, node_id: str) -> None:
    """At the head office: remove (revoke) a node that was enrolled but never came online."""
    with open_node(home) as node:
        row = roster.remove_unseen(node, node_id)
        epoch = node.trust.policy.epoch
    render.info(f"Removed node {row['node'][:16]} of {row['office']} (series {row['series']}, enrolled "
                f"{_minute(row['enrolled_at'])} UTC): it never came online. It is revoked; new key epoch {epoch}.")
    render.info(f"Its invite slot can be reissued: make a new code with 'p2psync invite {row['office']}'.")


for command in (group, ledger, voucher, report, conflicts_cmd, rebuild_cmd, demo_cmd, invite_cmd, join_cmd,
                settings_cmd, revoke_cmd, quarantine_cmd, run_cmd, sync_cmd, status_cmd, restart_cmd, relay_cmd,
                dashboard_cmd, backup_cmd, restore_cmd, doctor_cmd, service_group, audit_cmd, scope_group):
    cli.add_command(command)
report.add_command(audit_trail_cmd)


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
        render.error("aborted")
        sys.exit(EXIT_ERROR)
    except click.ClickException as exc:
        render.error(exc.format_message())
        sys.exit(exc.exit_code)
    except P2PSyncError as exc:
        render.error(str(exc))
        sys.exit(EXIT_ERROR)
    except KeyboardInterrupt:
        render.error("interrupted")
        sys.exit(130)
    except Exception as exc:  # a bug: keep the detail in the log, not on the user's screen
        crash_log.error("internal error\n%s", traceback.format_exc())
        files = [h.baseFilename for h in crash_log.handlers if isinstance(h, logging.FileHandler)]
        where = f"; details in {files[0]}" if files else ""
        render.error(f"internal error: {type(exc).__name__}: {exc}{where}")
        sys.exit(EXIT_INTERNAL)


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

