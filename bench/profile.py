"""Profiles of the bulk path, the live path and the first sync, with py-spy (every thread, the real
runtime over TLS) and pyinstrument (call trees of the node calls alone, without the network).

    python bench/profile.py [--quick]

Writes bench/results/profiles/: py-spy collapsed stacks (*.collapsed, open with speedscope or
flamegraph.pl), pyinstrument call trees (*.txt), and summary.json / summary.txt: per profile the
share of samples per function (inclusive: the function or anything it calls; self: the function's
own code) and per layer (SQLAlchemy, SQLite, pycrdt, crypto, websockets/TLS, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import common

OUT = common.BENCH_DIR / "results" / "profiles"
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^:()]*)(?::(?P<line>\d+))?\)$")
LAYERS = [  # first match wins, looking at the file of the frame
    ("sqlalchemy/sqlmodel", ("sqlalchemy/", "sqlmodel/")),
    ("pycrdt", ("pycrdt/",)),
    ("crypto", ("cryptography/",)),
    ("websockets", ("websockets/",)),
    ("asyncio/ssl", ("asyncio/", "ssl.py")),
    ("json", ("json/",)),
    ("zlib", ("zlib",)),
    ("p2psync", ("p2psync/",)),
]


# ---------------------------------------------------------------- scenarios (run under py-spy)


def _go() -> None:
    print("ready", flush=True)
    sys.stdin.readline()


def scenario(name: str, size: int) -> None:
    import p2p

    async def main() -> None:
        with tempfile.TemporaryDirectory(prefix="p2psync-prof-") as tmp:
            async with p2p.linked_pair(Path(tmp)) as pair:
                await p2p.bulk(pair, 200, seed=9, start=50_000_000)  # warm: documents loaded, link busy once
                await asyncio.to_thread(_go)
                if name == "bulk":
                    result = await p2p.bulk(pair, size)
                else:
                    result = await p2p.live(pair, size, warmup=0)
                print(json.dumps(result), flush=True)

    asyncio.run(main())


def _pyspy(args: list[str], out: Path, idle: bool) -> subprocess.Popen[bytes]:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    return subprocess.Popen([exe, "record", "-r", "250", "-f", "raw", "-o", str(out), "--nonblocking",
                             *(["--idle"] if idle else []), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def profile_runtime(name: str, size: int, idle: bool) -> Path:
    """Run a pair scenario in its own process and record it with py-spy from the moment it starts work."""
    out = OUT / f"{name}{'-wall' if idle else ''}.collapsed"
    proc = subprocess.Popen([sys.executable, __file__, "--scenario", name, "--size", str(size)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdin is not None
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"scenario {name} failed to start")
    spy = _pyspy(["--pid", str(proc.pid)], out, idle)
    time.sleep(1.5)  # py-spy attaches
    proc.stdin.write("go\n")
    proc.stdin.flush()
    proc.wait(3600)
    spy.wait(120)
    return out


def profile_first_sync(vouchers: int) -> tuple[Path, Path]:
    """The receiving branch (as a whole process) and the sending head office (attached) of a first sync."""
    import firstsync
    base = Path(tempfile.mkdtemp(prefix="p2psync-prof-fs-"))
    try:
        firstsync.build(base, vouchers, 100)
        server = common.side("p2p-serve", "--home", str(base / "HO"), stdin=True)
        ready = common.read_json_line(server, 120)
        sender_out, receiver_out = OUT / "firstsync-sender.collapsed", OUT / "firstsync-receiver.collapsed"
        spy_sender = _pyspy(["--pid", str(server.pid)], sender_out, False)
        time.sleep(1.5)
        spy_receiver = _pyspy(["--", sys.executable, str(common.BENCH_DIR / "sides.py"), "p2p-sync", "--home",
                               str(base / "BR1"), "--url", f"wss://127.0.0.1:{ready['port']}", "--expect",
                               str(vouchers)], receiver_out, False)
        spy_receiver.wait(3600)
        assert server.stdin is not None
        server.stdin.write("stop\n")
        server.stdin.flush()
        server.wait(120)
        spy_sender.wait(120)
        return sender_out, receiver_out
    finally:
        shutil.rmtree(base, ignore_errors=True)


# ---------------------------------------------------------------- pyinstrument: the node calls alone


def pyinstrument_calls(size: int, live: int) -> dict[str, Path]:
    from pyinstrument import Profiler

    from p2psync.node.office import Node

    outputs = {}
    base = Path(tempfile.mkdtemp(prefix="p2psync-prof-pi-"))
    try:
        home_a, home_b = common.make_org(base, ("BR1",))
        a, b = Node.open(home_a), Node.open(home_b)
        a.post_many(common.make_drafts(200, seed=9, start=50_000_000))
        b.receive(a.entries(b.vectors()))

        def record(name: str, fn: Any) -> None:
            profiler = Profiler(interval=0.0005)
            profiler.start()
            fn()
            profiler.stop()
            path = OUT / f"{name}.pyinstrument.txt"
            path.write_text(profiler.output_text(unicode=False, color=False, show_all=False))
            outputs[name] = path

        drafts = common.make_drafts(size, seed=2)
        record("bulk-post_many", lambda: a.post_many(drafts))
        record("bulk-receive", lambda: b.receive(a.entries(b.vectors())))
        singles = common.make_drafts(live, seed=4, start=1_000_000)
        after = a.last_entry_id()
        record("live-post", lambda: [a.post(d.draft) for d in singles])
        blobs = [e for *_k, e in a.entries_since(after)]
        record("live-receive", lambda: [b.receive([blob]) for blob in blobs])
        a.close()
        b.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return outputs


# ---------------------------------------------------------------- summaries


def _parse(line: str) -> tuple[list[tuple[str, str]], int]:
    stack, _, count = line.rstrip("\n").rpartition(" ")
    frames = []
    for raw in stack.split(";"):
        match = FRAME.match(raw)
        frames.append((match.group("func"), match.group("file")) if match else (raw, ""))
    return frames, int(count)


def _short(func: str, file: str) -> str:
    if "p2psync/" in file:
        module = file[file.index("p2psync/"):].removesuffix(".py").replace("/", ".")
        return f"{module}.{func}"
    return f"{func} [{Path(file).name or '?'}]"


def _layer(file: str) -> str:
    for name, needles in LAYERS:
        if any(n in file for n in needles):
            return name
    if file.startswith("<") or not file:
        return "builtin/C"
    return "other python"


BENCH_ONLY = {"make_drafts", "wait", "has", "count", "_go"}  # in bench/ files only
SQLITE_CALLS = {"do_execute", "do_executemany", "do_commit", "do_rollback", "do_close", "connect", "_on_connect",
                "_on_begin", "_execute_context"}


def _sample_layer(frames: list[tuple[str, str]]) -> str:
    """Where a sample's time goes: SQLite's C calls (made from SQLAlchemy's DBAPI wrappers), else the
    innermost frame of a known library or of p2psync."""
    func, file = frames[-1]
    if func in SQLITE_CALLS and ("sqlalchemy/engine" in file or "p2psync/store/db" in file):
        return "sqlite (C calls)"
    for func, file in reversed(frames):
        layer = _layer(file)
        if layer not in ("other python", "builtin/C"):
            return layer
    return _layer(frames[-1][1])


def summarize(path: Path, top: int = 25) -> dict[str, Any]:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        frames, count = _parse(line)
        if any(func in BENCH_ONLY and "bench/" in file for func, file in frames):
            continue  # the benchmark's own work (making drafts, watching B's table), not p2psync's
        total += count
        threads["worker" if any(f == "_worker" and "concurrent" in file for f, file in frames) else "event loop/main"] += count
        seen = set()
        for func, file in frames:
            name = _short(func, file)
            if name not in seen:
                seen.add(name)
                inclusive[name] += count
        func, file = frames[-1]
        own[_short(func, file)] += count
        layers[_sample_layer(frames)] += count
    share = lambda c: round(100 * c / total, 1) if total else 0.0
    p2p_inclusive = [(k, v) for k, v in inclusive.most_common() if k.startswith("p2psync.")]
    return {
        "samples": total,
        "threads_pct": {k: share(v) for k, v in threads.most_common()},
        "layers_pct": {k: share(v) for k, v in layers.most_common()},
        "p2psync_inclusive_pct": {k: share(v) for k, v in p2p_inclusive[:top]},
        "self_pct": {k: share(v) for k, v in own.most_common(top)},
    }


def render(summaries: dict[str, dict[str, Any]]) -> str:
    lines = []
    for name, s in summaries.items():
        lines.append(f"== {name}: {s['samples']} samples")
        lines.append("   threads: " + ", ".join(f"{k} {v}%" for k, v in s["threads_pct"].items()))
        lines.append("   layers (innermost known frame): " + ", ".join(f"{k} {v}%" for k, v in s["layers_pct"].items()))
        lines.append("   p2psync functions, inclusive share of samples:")
        lines += [f"     {v:5.1f}%  {k}" for k, v in s["p2psync_inclusive_pct"].items()]
        lines.append("   self time (leaf frames):")
        lines += [f"     {v:5.1f}%  {k}" for k, v in list(s["self_pct"].items())[:15]]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scenario", choices=("bulk", "live"), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scenario:
        scenario(args.scenario, args.size)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    bulk, live, first = (2_000, 200, 10_000) if args.quick else (10_000, 500, 100_000)
    collapsed = {
        "bulk (runtime pair, CPU)": profile_runtime("bulk", bulk, idle=False),
        "live (runtime pair, CPU)": profile_runtime("live", live, idle=False),
        "live (runtime pair, wall incl. idle)": profile_runtime("live", live, idle=True),
    }
    sender, receiver = profile_first_sync(first)
    collapsed["first sync receiver (process)"] = receiver
    collapsed["first sync sender (process)"] = sender
    trees = pyinstrument_calls(bulk, live)
    summaries = {name: summarize(path) for name, path in collapsed.items() if path.exists()}
    summaries = {k: v | {"file": collapsed[k].name} for k, v in summaries.items()}
    (OUT / "summary.json").write_text(json.dumps({"sizes": {"bulk": bulk, "live": live, "first_sync": first},
                                                  "profiles": summaries,
                                                  "pyinstrument": {k: v.name for k, v in trees.items()}}, indent=2))
    text = render(summaries)
    (OUT / "summary.txt").write_text(text)
    print(text)
    print(f"profiles in {OUT.relative_to(Path.cwd()) if OUT.is_relative_to(Path.cwd()) else OUT}")


if __name__ == "__main__":
    main()
