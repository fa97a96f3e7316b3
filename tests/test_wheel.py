"""The package as an office installs it: ``python -m build`` makes a pure wheel and an sdist, both with
the dashboard's static files; the wheel installs into a fresh virtual environment (its dependencies
from the package index, as ``pipx install p2psync`` does) and ``p2psync demo`` runs from there."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
from outside import require
from procs import environment

import p2psync

ROOT = Path(__file__).resolve().parent.parent
STATIC = sorted(p.name for p in (ROOT / "p2psync" / "web" / "static").iterdir() if p.is_file())


def run(args: list[str | Path], timeout: float, **kwargs: object) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False,
                          **kwargs)  # type: ignore[call-overload]
    assert done.returncode == 0, f"{args[:3]} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_the_wheel_installs_into_a_fresh_environment_and_runs_the_demo(tmp_path: Path) -> None:
    require(None if importlib.util.find_spec("build") else "the 'build' package (pip install -e '.[test]')")
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "build", "--outdir", dist, ROOT], 600)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    assert wheel.name == f"p2psync-{p2psync.__version__}-py3-none-any.whl"  # pure: one wheel for every system
    assert {f"p2psync/web/static/{name}" for name in STATIC} <= set(zipfile.ZipFile(wheel).namelist())
    with tarfile.open(sdist) as tar:
        top = sdist.name.removesuffix(".tar.gz")
        assert {f"{top}/p2psync/web/static/{name}" for name in STATIC} <= set(tar.getnames())

    env = environment(tmp_path)  # nothing of this checkout: no PYTHONPATH, run from elsewhere
    for var in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(var, None)
    venv = tmp_path / "fresh"
    run([sys.executable, "-m", "venv", venv], 120, cwd=tmp_path, env=env)
    scripts = venv / ("Scripts" if os.name == "nt" else "bin")
    run([scripts / "python", "-m", "pip", "install", "--quiet", wheel], 900, cwd=tmp_path, env=env)
    where = run([scripts / "python", "-c", "import p2psync; print(p2psync.__file__)"], 60, cwd=tmp_path, env=env)
    assert Path(where.stdout.strip()).is_relative_to(venv)
    demo = run([scripts / "p2psync", "demo", "--vouchers", "10"], 300, cwd=tmp_path, env=env)
    assert "Every office holds every entry" in demo.stdout
    assert "Traceback" not in demo.stderr and "warning" not in demo.stderr
