"""The README's first steps, as a new user types them in a fresh clone: install into ``.venv``, put
its ``p2psync`` on PATH the way the README says, then the first session, line by line, in one bash.

Only the install line itself is stood in for (it needs the package index): the test makes the same
``.venv`` with the ``p2psync`` command pip would write from ``pyproject.toml``'s entry point, using
the packages this interpreter already has. Every other line runs as written, with a PATH that holds
no other ``p2psync`` and a HOME of its own (the first session writes under ``~``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import sysconfig
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
INSTALL = "python3 -m venv .venv && .venv/bin/pip install -q -e ."
#: The demo is run by tests/test_demo.py; here only that the command is found when the README runs it.
DEMO = "p2psync demo"


def section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end != -1 else None]


def shell_lines(text: str) -> list[str]:
    """The lines of the section's ``sh`` blocks, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.DOTALL)
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def stand_in_install(clone: Path) -> None:
    """What the INSTALL line leaves behind: ``.venv`` with this project importable and its console
    script, ``p2psync``, written as pip writes one."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(clone / ".venv")], check=True)
    site = next((clone / ".venv" / "lib").glob("python3*/site-packages"))
    (site / "p2psync-here.pth").write_text(f"{ROOT}\n{sysconfig.get_paths()['purelib']}\n")
    target = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]["p2psync"]
    module, function = target.split(":")
    script = clone / ".venv" / "bin" / "p2psync"
    script.write_text(f"#!{clone / '.venv' / 'bin' / 'python'}\nimport sys\nfrom {module} import {function}\n"
                      f"sys.exit({function}())\n")
    script.chmod(0o755)


def user_environment(base: Path) -> dict[str, str]:
    """A new user's terminal: no virtual environment active and no ``p2psync`` on PATH."""
    path = [d for d in os.environ.get("PATH", "").split(os.pathsep)
            if d and not (Path(d) / "p2psync").exists() and not (Path(d) / "activate").exists()]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("P2PSYNC", "VIRTUAL_ENV", "PYTHON"))}
    env.update(PATH=os.pathsep.join(path), HOME=str(base / "home"))
    for var in ("XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME"):
        env[var] = str(base / "xdg")
    return env


def test_the_readme_install_and_first_session_work_as_written(tmp_path: Path) -> None:
    install = shell_lines(section("Install, and run the demo"))
    assert install[0] == INSTALL and DEMO in install, install
    session = shell_lines(section("A first session"))
    assert session and all(line.startswith(("export ", "p2psync ")) for line in session), session

    clone = tmp_path / "clone"
    clone.mkdir()
    stand_in_install(clone)
    steps = [line if line != DEMO else 'test "$(command -v p2psync)" = "$PWD/.venv/bin/p2psync"'
             for line in install[1:]] + session
    (tmp_path / "home").mkdir()
    done = subprocess.run(["bash", "-c", "set -euo pipefail\n" + "\n".join(steps)], check=False, cwd=clone,
                          env=user_environment(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "command not found" not in done.stderr and "Traceback" not in done.stderr
    assert "Registration ID" in done.stdout and "50,000.00" in done.stdout
    assert (tmp_path / "home" / "books" / "acme-ho" / "p2psync.db").exists()
