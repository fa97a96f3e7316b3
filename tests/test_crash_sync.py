"""Crash safety in the middle of a sync: a receiving node is SIGKILLed at random moments of its
exchange with a long-lived sender (a real ``p2psync run``), over and over, while the sender keeps
getting new entries. Nothing the receiver acknowledged is ever lost, its database stays whole, and
in the end it holds exactly what the sender holds.

"Acknowledged" is what the receiver told the sender it holds durably: the vectors in every ack frame
it sent. The worker prints each ack's vectors just before the frame leaves (so the test knows of
every ack the sender could have seen) and the test keeps the highest sequence acked per (author,
document)."""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import deque
from contextlib import closing
from pathlib import Path

import pytest
from helpers import all_reports, assert_log_whole, draft, setup_branch, setup_head
from procs import Fleet, environment, query, sync_here, vectors, wait_until

from p2psync.node.home import DB_FILE
from p2psync.node.office import Node

pytestmark = pytest.mark.slow

#: A zygote: imports p2psync once, then for each "go" line forks a worker that opens the receiving
#: node and syncs with the sender again and again until it is killed. Forking keeps a round cheap.
WORKER = r'''
import asyncio
import json
import os
import sys
from pathlib import Path

from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime
from p2psync.protocol.sync import SyncConnection

plain_ack = SyncConnection.ack


def say(line):
    """One line in one write: the worker may be killed at any moment, and a line cut short would run
    into the zygote's next one (print() writes the newline separately when output is unbuffered)."""
    os.write(1, (line + "\n").encode())


def reporting_ack(self, batch, vectors, **options):
    say(f"acked {json.dumps(vectors)}")
    return plain_ack(self, batch, vectors, **options)


SyncConnection.ack = reporting_ack


async def work(home, url, live):
    node = Node.open(home)
    say("opened")
    runtime = NodeRuntime(node, host="127.0.0.1", port=0, peers=(url,), mdns=False)
    if live:  # the running node: one link, entries pushed live as the sender gets them
        await runtime.start()
        await asyncio.Event().wait()
    while True:  # one-shot syncs, one after the other
        for state in await runtime.sync_once(timeout=30):
            say(f"synced {state.stats.received} {state.last_error!r}")


def main():
    home, url = Path(sys.argv[1]), sys.argv[2]
    for line in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(work(home, url, line.split()[1] == "live"))
            finally:
                os._exit(1)
        say(f"pid {pid}")
        os.waitpid(pid, 0)
        say("done")


main()
'''

ROUNDS = int(os.environ.get("CRASH_ROUNDS", "105"))
#: The bound on waiting for one line of the worker (generous: on a loaded machine a killed process may
#: sit in a long fsync before it dies).
WAIT_LINE = 120.0
#: Entries the sender holds before the first round; then it gets one more every few milliseconds.
PRELOAD, PAUSE = 200, 0.05


def post_at(node: Node, count: int, rng: random.Random) -> None:
    """`count` vouchers, one entry each, spread over three months (three documents)."""
    for _ in range(count):
        amount = f"{rng.randint(1, 9999)}.{rng.randint(0, 99):02d}"
        day = f"2026-{rng.choice(['04', '05', '06'])}-{rng.randint(1, 28):02d}"
        node.post(draft("payment", day, {"Rent": amount}, {"Cash": amount}, f"crash sync {rng.random()}"))


class Poster(threading.Thread):
    """Posts vouchers at the sender's home until stopped: the sender always has something new."""

    def __init__(self, home: Path, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.home, self.rng = home, rng
        self.stopping = threading.Event()
        self.posted = 0

    def run(self) -> None:
        node = Node.open(self.home)
        try:
            while not self.stopping.wait(PAUSE):
                post_at(node, 1, self.rng)
                self.posted += 1
        finally:
            node.close()


def integrity(home: Path) -> str:
    with closing(sqlite3.connect(home / DB_FILE)) as db:
        return str(db.execute("PRAGMA integrity_check").fetchone()[0])


def record_acks(line: str, acked: dict[tuple[str, str], int]) -> None:
    for doc, authors in json.loads(line.split(" ", 1)[1]).items():
        for author, seq in authors.items():
            acked[(doc, author)] = max(acked.get((doc, author), 0), seq)


class Worker:
    """The zygote's output, read by a thread so that the test can wait on it with a timeout."""

    def __init__(self, home: Path, url: str, script: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, str(script), str(home), url], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, bufsize=1, env=environment(home.parent))
        self.lines: queue.Queue[str] = queue.Queue()
        #: The last lines read, for a failure's message.
        self.recent: deque[str] = deque(maxlen=6)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put("")

    def next(self, timeout: float) -> str | None:
        try:
            line = self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            return None
        assert line, "the zygote ended"
        self.recent.append(line)
        return line

    def go(self, mode: str) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"go {mode}\n")
        self.proc.stdin.flush()
        line = self.next(WAIT_LINE)
        assert line is not None and line.startswith("pid "), line
        return int(line.split()[1])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def process_states(*pids: int) -> str:
    """What the kernel says of each process (state, and where it sleeps): for a failure's message."""
    states = []
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
            wchan = Path(f"/proc/{pid}/wchan").read_text()
        except OSError as exc:
            stat, wchan = "gone", exc.__class__.__name__
        states.append(f"{pid}: {stat} in {wchan or '-'}")
    return "; ".join(states)


#: Where a round's kill comes, in turn: at once (forking, importing, opening the database), soon after
#: the node opened (starting up, the TLS handshake, the first exchange), right after a number of
#: acknowledgements (receiving, applying and committing the next batches), or at any moment.
TRIGGERS = ("at-once", "after-open", "after-acks", "any-time")


def one_round(worker: Worker, rng: random.Random, round_no: int, acked: dict[tuple[str, str], int]) -> str:
    """Start a receiver, SIGKILL it at a random point of the round's kind, wait for it to be gone;
    returns where it died. Waits are for the worker's own events, never for a deadline guessed from
    how fast this machine is, except for the random moments themselves."""
    mode = "live" if round_no % 3 else "once"
    trigger = TRIGGERS[round_no % len(TRIGGERS)]
    pid = worker.go(mode)
    start = time.monotonic()
    acks_wanted = rng.randint(1, 4)
    delay = {"at-once": rng.uniform(0.0, 0.05), "any-time": rng.uniform(0.0, 1.5)}.get(trigger)
    seen = {"opened": 0, "acked": 0, "synced": 0}

    def note(line: str) -> None:
        word = line.split()[0]
        seen[word] = seen.get(word, 0) + 1
        if word == "acked":
            record_acks(line, acked)

    while True:
        wait = WAIT_LINE if delay is None else start + delay - time.monotonic()
        line = worker.next(wait)
        if line is None:
            assert delay is not None, f"no {trigger} event from the worker in {WAIT_LINE:.0f} s"
            break
        note(line)
        if trigger == "after-open" and seen["opened"] and delay is None:
            delay = time.monotonic() - start + rng.uniform(0.0, 0.3)
        if trigger == "after-acks" and seen["acked"] >= acks_wanted:
            time.sleep(rng.uniform(0.0, 0.02))
            break
    os.kill(pid, signal.SIGKILL)
    at = time.monotonic() - start
    while (line := worker.next(WAIT_LINE)) != "done\n":
        assert line is not None, (f"the killed worker was not reaped: {process_states(pid, worker.proc.pid)}; "
                                  f"last lines {list(worker.recent)!r}")
        note(line)
    return f"{mode}/{trigger}@{at:.2f}s:{'opened' if seen['opened'] else 'opening'},{seen['acked']}acks"


@pytest.mark.timeout(900)  # 105 rounds take a minute or two; far longer only on an overloaded machine
def test_a_receiver_killed_mid_sync_loses_nothing_acknowledged(tmp_path: Path, fleet: Fleet) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"seed {seed}")
    head = setup_head(tmp_path / "HO")
    setup_branch(tmp_path / "BR1", "BR1", head).close()
    post_at(head, PRELOAD, rng)
    head.close()
    sender = fleet.start(tmp_path / "HO")
    poster = Poster(tmp_path / "HO", random.Random(seed + 1))
    poster.start()
    script = tmp_path / "worker.py"
    script.write_text(WORKER, encoding="utf-8")
    worker = Worker(tmp_path / "BR1", sender.url, script)
    acked: dict[tuple[str, str], int] = {}
    kills: list[str] = []
    try:
        for round_no in range(ROUNDS):
            kills.append(one_round(worker, rng, round_no, acked))
            # after every kill: the database is whole and holds whatever was acknowledged
            assert integrity(tmp_path / "BR1") == "ok"
            gaps = query(tmp_path / "BR1", "SELECT doc, author, count(*), max(seq) FROM entry GROUP BY doc, author "
                                           "HAVING count(*) != max(seq)")
            assert not gaps, f"round {round_no}: the entry log has gaps {gaps}"
            held = vectors(tmp_path / "BR1")
            lost = {key: seq for key, seq in acked.items() if held.get(key[0], {}).get(key[1], 0) < seq}
            assert not lost, f"round {round_no}: acknowledged entries lost {lost}; kills so far {kills}"
    finally:
        worker.close()
        poster.stopping.set()
        poster.join(30)
        print(f"{len(kills)} kill points (mode/trigger@time:state,acks seen): {' '.join(kills)}")
        print(f"{poster.posted} vouchers posted at the sender during the rounds")

    assert len(kills) == ROUNDS
    assert sum(1 for k in kills if ",0acks" not in k) >= ROUNDS // len(TRIGGERS), "kills mid-transfer"
    assert sum(1 for k in kills if ",0acks" in k) >= ROUNDS // 10, "kills before the first acknowledgement"
    head = Node.open(tmp_path / "HO")
    wait_until(lambda: _sync_and_compare(tmp_path / "BR1", sender.url, head), "the receiver to catch up at last")
    branch = Node.open(tmp_path / "BR1")
    try:
        assert branch.vectors() == head.vectors()
        assert integrity(tmp_path / "BR1") == "ok"
        assert_log_whole(branch)
        assert not branch.quarantined()
        before = all_reports(branch)
        assert before == all_reports(head)
        branch.store.rebuild()  # the materialized tables equal a rebuild from the log alone
        assert all_reports(branch) == before
    finally:
        branch.close()
        head.close()


def _sync_and_compare(home: Path, url: str, head: Node) -> bool:
    sync_here(home, url)
    node = Node.open(home)
    try:
        return node.vectors() == head.vectors()
    finally:
        node.close()
