"""The node as a service the operating system starts with the machine: a systemd user unit (Linux),
a launchd daemon (macOS) and a scheduled task (Windows), each running ``p2psync run`` on one home as
the office's own user (the home and its keys are that user's, see docs/security.md).

Plain values in, text out: writing, enabling and starting them is the command line's part, so what
they say can be tested on any machine.
"""

from __future__ import annotations

import plistlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from p2psync.errors import InvalidInput

DEFAULT_NAME = "p2psync"
#: A name for unit files, launchd labels and task names alike.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
#: How long the system waits for a clean stop (SIGTERM) before it kills the node; it takes a second.
STOP_SECONDS = 30
RESTART_SECONDS = 10
PLATFORMS = ("linux", "macos", "windows")


@dataclass(frozen=True)
class Service:
    """One node as a service: its `name`, the Python that runs it, its home, extra ``run`` options
    and (macOS, Windows) the user it runs as."""

    name: str
    python: str
    home: Path
    run_args: tuple[str, ...] = ()
    user: str = ""

    def __post_init__(self) -> None:
        if not NAME.fullmatch(self.name):
            raise InvalidInput(f"service name {self.name!r}: use letters, digits, '.', '_' or '-' (at most 64)")

    def command(self, *args: str) -> list[str]:
        """``p2psync`` on this home through this very Python (a virtual environment's or pipx's)."""
        return [self.python, "-m", "p2psync", "--home", str(self.home), *args]

    @property
    def run(self) -> list[str]:
        return self.command("run", *self.run_args)

    @property
    def unit_name(self) -> str:
        return f"{self.name}.service"

    @property
    def label(self) -> str:
        return f"org.p2psync.{self.name}"


def platform_of(sys_platform: str) -> str:
    """``linux``, ``macos`` or ``windows`` for a `sys.platform` value."""
    if sys_platform == "win32":
        return "windows"
    return "macos" if sys_platform == "darwin" else "linux"


# ---------------------------------------------------------------- Linux: a systemd user unit


def unit_path(config_home: Path, service: Service) -> Path:
    """Where systemd's user manager looks for units of this user."""
    return config_home / "systemd" / "user" / service.unit_name


def systemd_unit(service: Service) -> str:
    """The user unit. `loginctl enable-linger` makes the user's manager start at boot, and it with it."""
    return "\n".join([
        "[Unit]",
        f"Description=p2psync node on {_unit_escape(str(service.home))}",
        "",
        "[Service]",
        "Type=exec",
        f"ExecStart={_exec_line(service.run)}",
        f"ExecReload={_exec_line(service.command('restart'))}",
        "Restart=on-failure",
        f"RestartSec={RESTART_SECONDS}",
        f"TimeoutStopSec={STOP_SECONDS}",
        "UMask=0077",
        "Environment=PYTHONUNBUFFERED=1",
        "",
        "[Install]",
        "WantedBy=default.target",
        "",
    ])


_PLAIN_ARG = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


def _exec_line(args: list[str]) -> str:
    """A command line as systemd reads it: quoted where needed, ``%`` and ``$`` taken literally."""
    return " ".join(_unit_escape(a if _PLAIN_ARG.fullmatch(a) else '"' + a.replace("\\", "\\\\").replace('"', '\\"')
                                 + '"').replace("$", "$$") for a in args)


def _unit_escape(text: str) -> str:
    return text.replace("%", "%%")


# ---------------------------------------------------------------- macOS: a launchd daemon


def launchd_path(service: Service) -> Path:
    """A daemon (not an agent) so that it starts with the machine, before anyone logs in."""
    return Path("/Library/LaunchDaemons") / f"{service.label}.plist"


def launchd_plist(service: Service) -> bytes:
    """Runs as the office's user (`UserName`), restarted after a crash but not after a clean stop."""
    return plistlib.dumps({
        "Label": service.label,
        "ProgramArguments": service.run,
        "UserName": service.user,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": RESTART_SECONDS,
        "ExitTimeOut": STOP_SECONDS,
        "Umask": 0o077,
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(service.home / "service.out"),
        "StandardErrorPath": str(service.home / "service.out"),
    })


def launchd_steps(service: Service, written: Path) -> list[str]:
    """Shell commands (an administrator's) that install, check and remove the daemon."""
    path, target = launchd_path(service), f"system/{service.label}"
    return [
        f"sudo install -m 644 -o root -g wheel {_sh(str(written))} {path}",
        f"sudo launchctl bootstrap system {path}",
        f"sudo launchctl print {target}        # state; 'p2psync status' shows the node itself",
        f"sudo launchctl bootout {target} && sudo rm {path}   # to remove it",
    ]


def _sh(text: str) -> str:
    return text if _PLAIN_ARG.fullmatch(text) else "'" + text.replace("'", "'\\''") + "'"


# ---------------------------------------------------------------- Windows: a scheduled task


def windows_task(service: Service) -> str:
    """A PowerShell script registering a task that starts at boot as the office's user (its password
    is asked once: Windows needs it to run the task before that user logs in), never times out, and
    is restarted if it fails."""
    program, *args = service.run
    return "\n".join([
        "# Run in PowerShell opened with 'Run as administrator', on the office's PC.",
        f"$action = New-ScheduledTaskAction -Execute {_ps(program)} -Argument {_ps(subprocess.list2cmdline(args))}",
        "$trigger = New-ScheduledTaskTrigger -AtStartup",
        ("$settings = New-ScheduledTaskSettingsSet -ExecutionTimeLimit ([TimeSpan]::Zero) -RestartCount 999 "
         "-RestartInterval (New-TimeSpan -Minutes 1) -StartWhenAvailable -AllowStartIfOnBatteries "
         "-DontStopIfGoingOnBatteries -MultipleInstances IgnoreNew"),
        (f"$credential = Get-Credential -UserName {_ps(service.user)} "
         "-Message 'The Windows password of the user p2psync runs as'"),
        (f"Register-ScheduledTask -TaskName {_ps(service.name)} -Action $action -Trigger $trigger -Settings $settings "
         "-User $credential.UserName -Password $credential.GetNetworkCredential().Password -RunLevel Limited -Force"),
        f"Start-ScheduledTask -TaskName {_ps(service.name)}",
        f"# State: Get-ScheduledTask -TaskName {_ps(service.name)} | Get-ScheduledTaskInfo (and 'p2psync status')",
        f"# Remove: Unregister-ScheduledTask -TaskName {_ps(service.name)} -Confirm:$false",
        "",
    ])


def _ps(text: str) -> str:
    """A PowerShell single-quoted string: nothing inside is expanded."""
    return "'" + text.replace("'", "''") + "'"
