"""``backup``, ``restore`` and ``doctor``: getting a damaged or lost home back (node.recovery)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import click

from p2psync.cli import render
from p2psync.cli.context import home_option, json_option
from p2psync.errors import P2PSyncError
from p2psync.node import recovery
from p2psync.node.home import KEYS_DIR, resolve_home
from p2psync.node.office import CATCHING_UP_FIX


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@home_option
def backup_cmd(home: str | None, file: Path, force: bool) -> None:
    """Write a consistent copy of the office's database to FILE, also while the node runs.

    The backup holds the database only, NOT the machine's private keys (the keys folder in the
    home): they are secrets, and they never change after init or join. Copy that folder once,
    separately, to a safe place; restoring needs it (restore --keys DIR)."""
    path = resolve_home(home)
    state = recovery.backup(path, file, force)
    render.info(f"Backed up {recovery.describe_identity(state.settings)} to {file} ({file.stat().st_size:,} bytes).")
    render.info(f"The keys are not in it: keep a copy of {path / KEYS_DIR} separately and safely.")


@click.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keys", "keys", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="The node's keys folder you backed up, copied into the home (when it lacks them).")
@click.option("--force", is_flag=True, help="Replace a database that is whole (it is kept aside, not deleted).")
@home_option
def restore_cmd(home: str | None, file: Path, keys: Path | None, force: bool) -> None:
    """Put the backup FILE back as this home's database, with the node stopped.

    The database it replaces is kept aside in the home. Afterwards the office catches up: it
    refuses to post, amend or cancel until one full exchange ('p2psync sync --peer URL', or the
    running node) has brought back every entry of its own that the other offices hold."""
    path = resolve_home(home)
    done = recovery.restore(path, file, keys, force)
    render.info(f"Restored {recovery.describe_identity(done.identity)} from {file} into {path}.")
    if done.kept_aside is not None:
        render.info(f"The database it replaced is kept as {done.kept_aside}.")
    render.info(f"This office is now catching up: {CATCHING_UP_FIX}; until then it refuses to post.")


@click.command("doctor")
@json_option
@home_option
def doctor_cmd(home: str | None, as_json: bool) -> None:
    """Say what is wrong with this home, and the command that mends each thing (exit 1 if anything)."""
    path = resolve_home(home)
    findings = recovery.doctor(path)
    if as_json:
        render.print_json({"home": str(path), "ok": not findings, "findings": [asdict(f) for f in findings]})
    elif not findings:
        render.info(f"{path}: nothing wrong found (database, keys).")
    else:
        for finding in findings:
            render.info(f"problem: {finding.problem}\n    fix: {finding.fix}")
    if findings:
        raise P2PSyncError(f"{len(findings)} problem{'s' if len(findings) > 1 else ''} found in {path}")
