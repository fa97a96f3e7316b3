"""Invite codes as typed by a person (`trust.invite.InviteCode.parse`). Refused input raises
`InvalidInput` only; a code accepted prints back to a text that parses to the same code."""

from __future__ import annotations

from fuzz.common import world
from p2psync.errors import InvalidInput
from p2psync.trust.invite import InviteCode


def check(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        code = InviteCode.parse(text)
    except InvalidInput as exc:
        assert str(exc)
        return
    assert InviteCode.parse(code.text()) == code
    assert len(code.invite_id) == 4 and len(code.secret) == 12 and len(code.pin) == 3


def seeds() -> list[bytes]:
    code = world().invite
    return [code.encode(), code.lower().replace("-", " ").encode(), code.replace("O", "0").encode()]
