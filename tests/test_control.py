"""The local control channel, over real sockets: the Unix socket (in the home, or for a home too deep
for a Unix socket path under a per-user name in the temp folder), usable only by the node's own user;
and the portable channel where Unix sockets do not exist: loopback TCP with a secret from the home."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import stat
from pathlib import Path

import pytest
from procs import free_port

from p2psync.errors import P2PSyncError
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
        async def handle(command: str, _args: dict[str, object]) -> dict[str, object]:
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


# ---------------------------------------------------------------- the portable channel (loopback TCP)


async def _echo(command: str, _args: dict[str, object]) -> dict[str, object]:
    return {"echo": command}


async def _raw(port: int, line: bytes) -> dict[str, object]:
    """One request line sent as any local program could, and the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(line + b"\n")
    reply = json.loads(await asyncio.wait_for(reader.readline(), 10))
    writer.close()
    return reply


def test_the_portable_channel_listens_on_loopback_with_a_private_secret(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(control.CHANNEL_ENV, "tcp")

    async def scenario() -> None:
        server = await control.serve(tmp_path, _echo)
        try:
            (address,) = [sock.getsockname() for sock in server.sockets]
            assert address[0] == "127.0.0.1"  # never on a LAN address
            written = control.port_file(tmp_path)
            if os.name == "posix":
                assert stat.S_IMODE(written.stat().st_mode) == 0o600
            data = json.loads(written.read_text())
            assert data["port"] == address[1] and len(data["secret"]) >= 40
            assert not control.socket_path(tmp_path).exists()

            assert await asyncio.to_thread(control.request, tmp_path, "status") == {"echo": "status"}
            for line in (json.dumps({"command": "status"}), json.dumps({"command": "stop", "secret": "x" * 43}),
                         json.dumps({"command": "stop", "secret": 5}),
                         json.dumps({"command": "stop", "secret": data["secret"][:-1]})):
                assert await _raw(data["port"], line.encode()) == {"refused": control.REFUSED}
            assert await _raw(data["port"], b"[1, 2]") == {"error": "malformed request"}
        finally:
            server.close()
            await server.wait_closed()
        assert not control.port_file(tmp_path).exists(), "closing removes the port file"

    asyncio.run(scenario())


def test_the_secret_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(control.hmac, "compare_digest", spy)
    assert control.secret_matches("abc", "abc") and not control.secret_matches("abd", "abc")
    assert not control.secret_matches(None, "abc") and not control.secret_matches(["abc"], "abc")
    assert compared == [(b"abc", b"abc"), (b"abd", b"abc")]


def test_a_client_with_a_wrong_secret_gets_one_clear_refusal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(control.CHANNEL_ENV, "tcp")

    async def scenario() -> None:
        server = await control.serve(tmp_path, _echo)
        try:
            path = control.port_file(tmp_path)
            data = json.loads(path.read_text())
            path.write_text(json.dumps({**data, "secret": "guessed"}))
            with pytest.raises(P2PSyncError, match="refused the request: wrong or missing control secret"):
                await asyncio.to_thread(control.request, tmp_path, "status")
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_a_stale_port_file_means_no_node_and_does_not_block_the_next_start(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A node killed with SIGKILL leaves its port file; its port may then be free, or another
    program's that does not speak the protocol."""
    monkeypatch.setenv(control.CHANNEL_ENV, "tcp")
    path = control.port_file(tmp_path)
    path.write_text(json.dumps({"port": free_port(), "secret": "left by a killed node"}))
    assert control.request(tmp_path, "status") is None
    path.write_text("{half a file")
    assert control.request(tmp_path, "status") is None

    async def scenario() -> None:
        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()  # another program on the old port

        squatter = await asyncio.start_server(mute, "127.0.0.1", 0)
        path.write_text(json.dumps({"port": squatter.sockets[0].getsockname()[1], "secret": "old"}))
        server = await control.serve(tmp_path, _echo)
        try:
            assert await asyncio.to_thread(control.request, tmp_path, "sync") == {"echo": "sync"}
            with pytest.raises(P2PSyncError, match="already running"):
                await control.serve(tmp_path, _echo)
        finally:
            server.close()
            squatter.close()
            await server.wait_closed()

    asyncio.run(scenario())


def test_the_channel_is_chosen_per_platform_and_can_be_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(control.CHANNEL_ENV, raising=False)
    assert control.channel_kind() == ("unix" if control.unix_sockets() else "tcp")
    monkeypatch.setattr(control.sys, "platform", "win32")
    assert not control.unix_sockets() and control.channel_kind() == "tcp"
    monkeypatch.setenv(control.CHANNEL_ENV, "unix")
    with pytest.raises(P2PSyncError, match="no Unix sockets"):
        control.channel_kind()
    monkeypatch.setenv(control.CHANNEL_ENV, "pipes")
    with pytest.raises(P2PSyncError, match="must be 'unix' or 'tcp'"):
        control.channel_kind()
