"""A new office's first week, as it meets the command line: a join that is refused spends no code,
the head office lists and removes nodes that never came online, and a revoked node says so and
stops calling its peers. Each step is a real ``python -m p2psync`` process (``here`` runs the same
CLI code in this process where only the output matters)."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from procs import Fleet, cli, here, here_json, make_org, policy, query

from p2psync.node import registrar
from p2psync.node.office import Node


def one_error_line(stderr: str) -> str:
    """The whole of stderr, which must be a single ``error: ...`` line."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def refused(home: Path, *args: str) -> str:
    """Run a command that must be refused; returns its one error line."""
    result = cli(home, *args, check=False)
    assert result.returncode == 1, f"exit {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return one_error_line(result.stderr)


def invite_used_by(home: Path, code_office: str) -> list[str | None]:
    return [used for (used,) in query(home, "SELECT used_by FROM invite WHERE office = ? ORDER BY created_at",
                                      code_office)]


@pytest.mark.slow
def test_a_join_refused_here_spends_no_code_and_enrolls_nothing(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    code = here(ho, "invite", "BR1").split()[-1]
    before = policy(ho)
    (tmp_path / "a-file").write_text("not a folder")

    assert "already holds a p2psync node" in refused(br1, "join", code, "--via", head.url)
    assert "already holds a p2psync node" in refused(ho, "join", code, "--via", head.url)
    assert "is a file" in refused(tmp_path / "a-file", "join", code, "--via", head.url)
    for address in ("http://127.0.0.1:1", "ws://:8470", "ws://127.0.0.1:99999", "127.0.0.1:8470"):
        assert "not a head office's address" in refused(tmp_path / "new", "join", code, "--via", address)
    assert "typo" in refused(tmp_path / "new", "join", code[:-1] + ("A" if code[-1] != "A" else "B"), "--via",
                             head.url)

    after = policy(ho)
    assert (after["version"], after["members"]) == (before["version"], before["members"])
    assert invite_used_by(ho, "BR1")[-1] is None
    assert not (tmp_path / "new" / "p2psync.db").exists()

    joined = cli(tmp_path / "new", "join", code, "--via", head.url).stdout  # the same code still works
    assert "as branch BR1" in joined
    assert policy(ho)["version"] == before["version"] + 1


def enroll_phantom(ho: Path, office: str) -> str:
    """A node the head office enrolled whose branch never set up its home (as a join into a home that
    already held books did before joins checked the home first); returns its node id."""
    head = Node.open(ho)
    try:
        known = set(head.trust.policy.members)
        registrar.enroll_here(head, ho.parent / f"phantom-{office}", office).close()
        return (set(head.trust.policy.members) - known).pop()
    finally:
        head.close()


def test_the_head_office_lists_nodes_and_removes_one_that_never_came_online(tmp_path: Path) -> None:
    ho, _br1 = make_org(tmp_path, ("BR1",))
    phantom = enroll_phantom(ho, "BR1")
    nodes = {row["node"]: row for row in json.loads(cli(ho, "branch", "nodes", "--json").stdout)}
    assert [nodes[n]["office"] for n in nodes] == ["HO", "BR1", "BR1"]
    assert nodes[phantom]["series"] == 2 and not nodes[phantom]["came_online"] and nodes[phantom]["last_seen"] == ""
    assert nodes[phantom]["enrolled_at"][:4].isdigit() and not nodes[phantom]["revoked"]
    table = cli(ho, "branch", "nodes").stdout
    assert "never came online" in table and "branch remove-node" in table

    assert "too short" in refused(ho, "branch", "remove-node", phantom[:4])
    removed = cli(ho, "branch", "remove-node", phantom[:12]).stdout
    assert f"Removed node {phantom[:16]} of BR1 (series 2" in removed
    assert "it never came online" in removed and "invite slot can be reissued" in removed
    assert "p2psync invite BR1" in removed
    assert phantom in policy(ho)["revoked"]
    assert "already revoked" in refused(ho, "branch", "remove-node", phantom)
    assert {row["node"]: row for row in here_json(ho, "branch", "nodes")}[phantom]["revoked"]


def test_a_node_that_came_online_is_not_removed_as_unseen_and_revoke_still_works(tmp_path: Path) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    branch = next(r for r in here_json(ho, "branch", "nodes") if r["office"] == "BR1")
    here(br1, "voucher", "post", "--type", "receipt", "--date", "2026-04-01", "--dr", "Cash=10", "--cr",
         "Sales=10")
    head, node = Node.open(ho), Node.open(br1)  # the head office receives the branch's voucher
    try:
        head.receive(node.entries(head.vectors()))
    finally:
        head.close()
        node.close()
    seen = next(r for r in here_json(ho, "branch", "nodes") if r["office"] == "BR1")
    assert seen["came_online"] and seen["entries"] > 0
    assert "has come online" in refused(ho, "branch", "remove-node", branch["node"])
    assert "p2psync revoke" in refused(ho, "branch", "remove-node", branch["node"])

    phantom = enroll_phantom(ho, "BR1")
    revoked = cli(ho, "revoke", "BR1").stdout  # by office: both of its nodes
    assert branch["node"][:16] in revoked and f"{phantom[:16]} (it never came online)" in revoked
    assert f"{branch['node'][:16]} (it never" not in revoked
    assert "p2psync invite BR1" in revoked
    assert set(policy(ho)["revoked"]) == {branch["node"], phantom}


class CountingListener:
    """A TCP port that accepts and at once closes every connection, counting them: what a revoked
    node's dialer costs the address it keeps calling."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"wss://127.0.0.1:{self.sock.getsockname()[1]}"
        self.accepted = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.slow
def test_a_revoked_node_says_so_and_stops_calling_its_peers(tmp_path: Path, fleet: Fleet) -> None:
    ho, br1 = make_org(tmp_path, ("BR1",))
    head = fleet.start(ho)
    here(ho, "revoke", "BR1")
    sync = cli(br1, "sync", "--peer", head.url, check=False)  # the head office hands it the policy
    assert sync.returncode == 1 and "Traceback" not in sync.stderr
    assert json.loads(cli(br1, "status", "--json").stdout)["node"]["revoked"] is True
    shown = cli(br1, "status").stdout
    assert "This node was revoked by the head office" in shown
    assert "register a replacement machine" in shown and "p2psync invite BR1" in shown

    listener = CountingListener()
    try:
        node = fleet.start(br1, peers=(listener.url,))
        time.sleep(6)  # unrevoked, it would have dialed again after about 1 s, then 2 s, then 4 s
        assert listener.accepted == 1, f"{listener.accepted} dials in 6 s"
        assert "This node was revoked by the head office" in cli(br1, "status").stdout  # from the running node
        node.stop()
    finally:
        listener.close()
    posted = cli(br1, "voucher", "post", "--type", "receipt", "--date", "2026-04-01", "--dr", "Cash=10", "--cr",
                 "Sales=10", check=False)
    assert posted.returncode == 1 and "revoked" in one_error_line(posted.stderr)
