"""Request lines on the node's control socket (`node.control.decode_request`). Refused input raises
`ValueError` only; a request accepted names its command as text."""

from __future__ import annotations

from p2psync.node.control import decode_request


def check(data: bytes) -> None:
    try:
        command = decode_request(data)
    except ValueError as exc:
        assert str(exc)
        return
    assert isinstance(command, str)
    command.encode()


def seeds() -> list[bytes]:
    return [b'{"command": "status"}\n', b'{"command": "sync"}\n', b"\n", b'{"command": "restart", "x": [1]}\n']
