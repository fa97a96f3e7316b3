"""The local control channel's socket: in the home, or (for a home too deep for a Unix socket path)
under a per-user name in the temp folder, and usable only by the node's own user."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

from p2psync.node import control


def test_socket_lives_in_a_short_home(tmp_path: Path) -> None:
    assert control.socket_path(tmp_path) == tmp_path.resolve() / control.SOCKET_NAME


def test_a_deep_home_gets_a_short_private_socket_path_that_still_works(tmp_path: Path) -> None:
    home = tmp_path / ("d" * 60) / ("e" * 60)
    home.mkdir(parents=True)
    path = control.socket_path(home)
    assert len(str(path).encode()) < control.MAX_SOCKET_PATH and str(os.getuid()) in path.name
    assert control.socket_path(home) == path  # stable, so the CLI finds the running node

    async def serve_once() -> None:
        async def handle(command: str) -> dict[str, object]:
            return {"echo": command}

        server = await control.serve(home, handle)
        try:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode & 0o077 == 0  # nobody but the owner may connect
            reply = await asyncio.to_thread(control.request, home, "status")
            assert reply == {"echo": "status"}
        finally:
            server.close()
            await server.wait_closed()
            path.unlink(missing_ok=True)

    asyncio.run(serve_once())


def test_no_running_node_means_no_answer(tmp_path: Path) -> None:
    assert control.request(tmp_path, "status") is None
