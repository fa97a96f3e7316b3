"""Fixtures: an HO and two branches sharing the standard chart, copied fresh for each test; the node
processes a test starts; a throwaway PostgreSQL server for the relay's shared store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pgserver
import pytest
from helpers import OFFICES, open_trio, setup_branch, setup_head, sync
from outside import require
from pgserver import PostgresServer
from procs import Fleet

from p2psync.node.office import Node


@pytest.fixture(scope="session")
def trio_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Homes of an HO and two branches that already hold the HO's masters, built once per session."""
    base = tmp_path_factory.mktemp("trio-template")
    head = setup_head(base / "HO")
    branches = [setup_branch(base / code, code, head) for code in OFFICES[1:]]
    sync(head, *branches)  # the first branch learns of the second from the newer policy
    for node in (head, *branches):
        node.close()
    return base


@pytest.fixture
def trio(trio_template: Path, tmp_path: Path) -> Iterator[list[Node]]:
    nodes = open_trio(trio_template, tmp_path)
    yield nodes
    for node in nodes:
        node.close()


@pytest.fixture
def head(trio: list[Node]) -> Node:
    return trio[0]


@pytest.fixture
def branch(trio: list[Node]) -> Node:
    return trio[1]


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """The node processes a test starts, all stopped at its end (even when it fails)."""
    nodes = Fleet()
    yield nodes
    nodes.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server per test process, started on first use."""
    require(pgserver.missing())
    server = PostgresServer().start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on that server, as a postgresql:// URL."""
    return postgres_server.create_database()
