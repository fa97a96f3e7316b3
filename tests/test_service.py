"""``p2psync service``: the systemd user unit it writes (checked by the real ``systemd-analyze verify``)
runs the node, which stops cleanly on the unit's SIGTERM; what it asks of systemctl and logind (stand-ins
on PATH record it: a test machine has no user manager to talk to); the launchd daemon and Windows task
it prints; and its refusals, each one line."""

from __future__ import annotations

import getpass
import json
import os
import plistlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from outside import require
from procs import SERVING, environment, make_org, wait_until

from p2psync.node import service

FAKE = """#!/bin/sh
echo "$(basename "$0") $*" >> "{log}"
case "$2" in
  is-enabled) echo enabled ;;
  is-active) echo active ;;
esac
"""


def fake_tools(base: Path) -> tuple[dict[str, str], Path]:
    """An environment whose systemctl and loginctl only record how they were called."""
    bin_dir, log = base / "bin", base / "calls.log"
    bin_dir.mkdir()
    for tool in ("systemctl", "loginctl"):
        (bin_dir / tool).write_text(FAKE.format(log=log))
        (bin_dir / tool).chmod(0o755)
    env = environment(base)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env, log


def p2psync(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "p2psync", *args], capture_output=True, text=True, env=env,
                          timeout=120, check=False)


def verify(unit: Path, base: Path) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze verify --user``; it needs a runtime directory, not a running systemd."""
    analyze = shutil.which("systemd-analyze")
    require(None if analyze else "systemd-analyze is not installed (apt-get install systemd)")
    runtime = tempfile.mkdtemp(prefix="rt")  # short: socket paths of the system's own user units go in it
    try:
        return subprocess.run([str(analyze), "verify", "--user", str(unit)], capture_output=True, text=True,
                              env={**os.environ, "XDG_RUNTIME_DIR": runtime, "XDG_CONFIG_HOME": str(base / "xdg")},
                              timeout=60, check=False)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)


def complaints(checked: subprocess.CompletedProcess[str], unit: Path) -> list[str]:
    """What verify said about `unit` (not about units the system itself ships)."""
    return [line for line in checked.stderr.splitlines() if unit.name in line or str(unit) in line]


def test_install_writes_a_valid_user_unit_that_runs_the_node_and_uninstall_removes_it(tmp_path: Path) -> None:
    base = tmp_path / "office books"  # a space in the path, as in 'Application Support'
    base.mkdir()
    (ho,) = make_org(base, ())
    env, calls = fake_tools(base)
    run_options = ("--host", "127.0.0.1", "--port", "0", "--no-mdns", "--no-dashboard")

    installed = p2psync(env, "service", "install", "--home", str(ho), "--", *run_options)
    assert installed.returncode == 0, installed.stderr
    unit = base / "xdg" / "systemd" / "user" / "p2psync.service"
    assert f"Installed p2psync.service ({unit})" in installed.stdout
    assert calls.read_text().splitlines() == [
        "systemctl --user daemon-reload", "systemctl --user enable p2psync.service",
        "systemctl --user start p2psync.service", f"loginctl enable-linger {getpass.getuser()}"]

    checked = verify(unit, base)
    assert checked.returncode == 0 and complaints(checked, unit) == [], checked.stderr
    text = unit.read_text()
    assert "WantedBy=default.target" in text and "Restart=on-failure" in text

    # What systemd would start: the node on this home, which it stops with SIGTERM.
    (exec_start,) = re.findall(r"^ExecStart=(.*)$", text, re.MULTILINE)
    argv = shlex.split(exec_start)
    assert argv == [sys.executable, "-m", "p2psync", "--home", str(ho.resolve()), "run", *run_options]
    out = base / "service.out"
    with out.open("wb") as sink:
        node = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        wait_until(lambda: SERVING.search(out.read_text()) or node.poll() is not None, "the service's node to serve")
        shown = json.loads(p2psync(env, "service", "status", "--home", str(ho), "--json").stdout)
        assert shown == {"name": "p2psync", "platform": "linux", "unit": str(unit), "installed": True,
                         "enabled": "enabled", "active": "active", "node_running": True}
        again = p2psync(env, "service", "install", "--home", str(ho), "--", *run_options)
        assert again.returncode == 0, again.stderr  # reinstalling (after an upgrade) restarts it
        assert "systemctl --user restart p2psync.service" in calls.read_text()
        node.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert node.wait(service.STOP_SECONDS) == 0, out.read_text()
        assert time.monotonic() - started < 5
    finally:
        if node.poll() is None:
            node.kill()

    removed = p2psync(env, "service", "uninstall")
    assert removed.returncode == 0, removed.stderr
    assert not unit.exists()
    assert calls.read_text().splitlines()[-2:] == ["systemctl --user disable --now p2psync.service",
                                                   "systemctl --user daemon-reload"]


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above means something here: verify fails on a unit whose program does not exist."""
    unit = tmp_path / "broken.service"
    unit.write_text("[Service]\nExecStart=/nonexistent/python -m p2psync run\n\n[Install]\nWantedBy=default.target\n")
    checked = verify(unit, tmp_path)
    assert checked.returncode != 0 and complaints(checked, unit), checked.stderr


def test_install_refusals_are_one_line(tmp_path: Path) -> None:
    env, calls = fake_tools(tmp_path)
    empty = tmp_path / "empty"
    for args, expected, code in (
            (("--home", str(empty)), f"error: no office is set up in {empty}", 1),
            (("--name", "../etc"), "error: service name '../etc'", 1),
            (("--", "--home", "x"), "error: give --home to 'p2psync service'", 1),
            (("--", "--prot", "1"), "error: No such option '--prot'", 2)):
        if "--home" not in args[:1]:
            args = ("--home", str(make_home(tmp_path)), *args)
        done = p2psync(env, "service", "install", *args)
        assert done.returncode == code and done.stderr.startswith(expected), done.stderr
        assert len(done.stderr.splitlines()) == 1 and "Traceback" not in done.stderr
    assert not calls.exists(), "nothing was asked of systemd"

    gone = p2psync(env, "service", "uninstall")
    assert gone.returncode == 1 and "error: no service p2psync.service is installed" in gone.stderr

    no_systemd = {**env, "PATH": str(tmp_path / "nowhere")}
    failed = p2psync(no_systemd, "service", "install", "--home", str(make_home(tmp_path)))
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: wrote ") and "this system has no systemctl" in failed.stderr


def make_home(base: Path) -> Path:
    home = base / "HO"
    if not home.exists():
        make_org(base, ())
    return home


def test_a_running_node_is_not_doubled_by_installing_its_service(tmp_path: Path) -> None:
    env, calls = fake_tools(tmp_path)
    (ho,) = make_org(tmp_path, ())
    node = subprocess.Popen([sys.executable, "-m", "p2psync", "--home", str(ho), "run", "--host", "127.0.0.1",
                             "--port", "0", "--no-mdns", "--no-dashboard"], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert node.stdout is not None and "serving on" in node.stdout.readline()
        done = p2psync(env, "service", "install", "--home", str(ho))
        assert done.returncode == 1 and "already running" in done.stderr and not calls.exists()
    finally:
        node.terminate()
        assert node.wait(20) == 0


def test_show_prints_the_launchd_daemon_and_the_windows_task(tmp_path: Path) -> None:
    env, _calls = fake_tools(tmp_path)
    home = tmp_path / "It's Application Support" / "p2psync"
    shown = p2psync(env, "service", "show", "--platform", "macos", "--home", str(home), "--", "--no-mdns")
    assert shown.returncode == 0, shown.stderr
    plist = plistlib.loads(shown.stdout[:shown.stdout.index("</plist>") + len("</plist>")].encode())
    assert plist["ProgramArguments"] == [sys.executable, "-m", "p2psync", "--home", str(home), "run", "--no-mdns"]
    assert plist["RunAtLoad"] is True and plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["UserName"] and plist["Label"] == "org.p2psync.p2psync" and plist["Umask"] == 0o077
    assert "sudo launchctl bootstrap system /Library/LaunchDaemons/org.p2psync.p2psync.plist" in shown.stdout

    task = p2psync(env, "service", "show", "--platform", "windows", "--home", str(home)).stdout
    assert "New-ScheduledTaskTrigger -AtStartup" in task and "-ExecutionTimeLimit ([TimeSpan]::Zero)" in task
    argument = re.search(r"-Argument '((?:[^']|'')*)'", task)
    assert argument is not None
    assert argument.group(1).replace("''", "'") == subprocess.list2cmdline(["-m", "p2psync", "--home", str(home),
                                                                             "run"])
    assert "Register-ScheduledTask -TaskName 'p2psync'" in task


def test_unit_command_lines_quote_what_systemd_would_expand() -> None:
    unit = service.systemd_unit(service.Service("p2psync", "/opt/p 2/python", Path("/srv/100%$HOME")))
    (line,) = re.findall(r"^ExecStart=(.*)$", unit, re.MULTILINE)
    assert line == '"/opt/p 2/python" -m p2psync --home "/srv/100%%$$HOME" run'
