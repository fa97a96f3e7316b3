"""``p2psync service install|uninstall|status|show``: the node started with the machine.

On Linux these write and enable a systemd user unit (and ask logind to start the user's manager at
boot). On macOS and Windows they print the launchd daemon and the scheduled task to install, with the
commands that install them, for an administrator to run (docs/operations.md).
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import click

from p2psync.cli import render
from p2psync.cli.context import home_option, json_option
from p2psync.cli.serve_commands import run_cmd
from p2psync.errors import P2PSyncError
from p2psync.node import control, service
from p2psync.node.home import DB_FILE, check_private_keys, resolve_home
from p2psync.trust.keys import write_private_file

SYSTEMCTL_SECONDS = 60

name_option = click.option("--name", default=service.DEFAULT_NAME, show_default=True,
                           help="The service's name (another name for a second home on one machine).")


@click.group("service")
def service_group() -> None:
    """Run this office's node as a service that starts with the machine."""


@service_group.command("install", context_settings={"ignore_unknown_options": True})
@name_option
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUN OPTIONS]")
@home_option
def install_cmd(home: str | None, name: str, run_args: tuple[str, ...]) -> None:
    """Install and start the service; options after -- go to 'p2psync run' (for example --peer)."""
    unit = _service(home, name, run_args)
    platform = service.platform_of(sys.platform)
    if platform != "linux":
        _print_for(platform, unit)
        return
    path = service.unit_path(_config_home(), unit)
    was_installed = path.exists()
    if not was_installed and control.request(unit.home, "status") is not None:
        raise P2PSyncError(f"a node is already running on {unit.home}; stop it first, the service will start it")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private_file(path, service.systemd_unit(unit).encode())
    _systemctl(path, "daemon-reload")
    _systemctl(path, "enable", unit.unit_name)
    _systemctl(path, "restart" if was_installed else "start", unit.unit_name)
    render.info(f"Installed {unit.unit_name} ({path}): the node runs now and starts with the machine.")
    if not _linger():
        render.info(f"Note: it starts when {_user()} logs in. To start it with the machine before anyone logs "
                    f"in, an administrator runs: sudo loginctl enable-linger {_user()}")


@service_group.command("uninstall")
@name_option
def uninstall_cmd(name: str) -> None:
    """Stop the service and remove it; the home and its books stay as they are."""
    unit = service.Service(name, sys.executable, Path())
    platform = service.platform_of(sys.platform)
    if platform != "linux":
        raise P2PSyncError(f"on {platform}, remove the service with the command shown by 'p2psync service show'")
    path = service.unit_path(_config_home(), unit)
    if not path.exists():
        raise P2PSyncError(f"no service {unit.unit_name} is installed ({path})")
    _systemctl(path, "disable", "--now", unit.unit_name)
    path.unlink()
    _systemctl(path, "daemon-reload")
    render.info(f"Removed {unit.unit_name}: the node is stopped and no longer starts with the machine. "
                "Its home is untouched.")


@service_group.command("status")
@name_option
@json_option
@home_option
def status_cmd(home: str | None, name: str, as_json: bool) -> None:
    """Whether the service is installed, enabled and active, and whether the node answers."""
    unit = service.Service(name, sys.executable, resolve_home(home).resolve())
    data: dict[str, Any] = {"name": unit.name, "platform": service.platform_of(sys.platform)}
    if data["platform"] == "linux":
        path = service.unit_path(_config_home(), unit)
        data |= {"unit": str(path), "installed": path.exists(), "enabled": _query("is-enabled", unit),
                 "active": _query("is-active", unit)}
    data["node_running"] = control.request(unit.home, "status") is not None
    if as_json:
        render.print_json(data)
        return
    if data["platform"] == "linux":
        render.info(f"{unit.unit_name}: {'installed' if data['installed'] else 'not installed'} ({data['unit']}), "
                    f"{data['enabled']}, {data['active']}")
    else:
        render.info(f"On {data['platform']}, see the service's state with the command 'p2psync service show' names.")
    render.info(f"Node on {unit.home}: {'running' if data['node_running'] else 'not running'}")


@service_group.command("show", context_settings={"ignore_unknown_options": True})
@name_option
@click.option("--platform", "platform", type=click.Choice(service.PLATFORMS), default=None,
              help="The system to show it for (default: this one).")
@click.argument("run_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- RUN OPTIONS]")
@home_option
def show_cmd(home: str | None, name: str, platform: str | None, run_args: tuple[str, ...]) -> None:
    """Print the unit, launchd daemon or scheduled task that 'install' uses, changing nothing."""
    unit = _service(home, name, run_args, need_node=False)
    _print_for(platform or service.platform_of(sys.platform), unit, write=False)


def _service(home: str | None, name: str, run_args: tuple[str, ...], need_node: bool = True) -> service.Service:
    """The service for this home, its ``run`` options checked now rather than at every boot."""
    path = resolve_home(home).resolve()
    if need_node:
        if not (path / DB_FILE).exists():
            raise P2PSyncError(f"no office is set up in {path}; set it up ('p2psync init' or 'p2psync join') first")
        check_private_keys(path)
    if any(arg == "--home" or arg.startswith("--home=") for arg in run_args):
        raise P2PSyncError("give --home to 'p2psync service', not among the options for 'run'")
    run_cmd.make_context("p2psync run", list(run_args))  # a mistyped option is an error here, not a failing service
    return service.Service(name, sys.executable, path, run_args, _account())


def _print_for(platform: str, unit: service.Service, write: bool = True) -> None:
    """The text for `platform`; for launchd, written to a file the printed commands install."""
    if platform == "linux":
        click.echo(service.systemd_unit(unit), nl=False)
        render.info(f"# {service.unit_path(_config_home(), unit)}; 'p2psync service install' writes and enables it")
    elif platform == "macos":
        plist = service.launchd_plist(unit)
        click.echo(plist.decode(), nl=False)
        written = Path(tempfile.gettempdir()) / f"{unit.label}.plist"
        if write:
            write_private_file(written, plist)
        render.info("\n".join(["# To install it (an administrator, in Terminal):",
                               *service.launchd_steps(unit, written)]))
    else:
        click.echo(service.windows_task(unit), nl=False)


def _config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def _user() -> str:
    return getpass.getuser()


def _account() -> str:
    """The user the service runs as: this one (on Windows with its domain, as the task wants it)."""
    domain = os.environ.get("USERDOMAIN", "") if sys.platform == "win32" else ""
    return f"{domain}\\{_user()}" if domain else _user()


def _systemctl(path: Path, *args: str) -> None:
    """``systemctl --user ARGS``; its complaint as one line if it fails."""
    done = _run("systemctl", "--user", *args)
    if done is None:
        raise P2PSyncError(f"wrote {path}, but this system has no systemctl: start the node another way "
                           "(see 'p2psync service show')")
    if done.returncode != 0:
        said = (done.stderr.strip() or done.stdout.strip() or f"exit code {done.returncode}").splitlines()[0]
        raise P2PSyncError(f"wrote {path}, but 'systemctl --user {' '.join(args)}' failed: {said}")


def _query(what: str, unit: service.Service) -> str:
    done = _run("systemctl", "--user", what, unit.unit_name)
    if done is None:
        return "unknown (no systemctl)"
    return (done.stdout.strip() or done.stderr.strip() or "unknown").splitlines()[0]


def _linger() -> bool:
    """Ask logind to start this user's manager at boot (allowed for oneself on most systems)."""
    done = _run("loginctl", "enable-linger", _user())
    return done is not None and done.returncode == 0


def _run(program: str, *args: str) -> subprocess.CompletedProcess[str] | None:
    found = shutil.which(program)
    if found is None:
        return None
    try:
        return subprocess.run([found, *args], capture_output=True, text=True, timeout=SYSTEMCTL_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise P2PSyncError(f"{program} {' '.join(args)} failed: {exc}") from None
