"""A branch joins its organisation: one enrollment exchange with the head office (at a given
address, else whichever node on the LAN answers as our head office), then the branch's home."""

from __future__ import annotations

from pathlib import Path

from p2psync.errors import P2PSyncError
from p2psync.net import discovery, enrollment
from p2psync.node.home import check_new_home
from p2psync.node.office import Node
from p2psync.trust import enroll
from p2psync.trust.invite import InviteCode
from p2psync.trust.keys import NodeKeys

LAN_SEARCH_SECONDS = 3.0


async def join(home: Path, code: str, via: str | None = None) -> tuple[Node, str]:
    """Register this branch with the head office using its one-time `code`; returns the new node and
    the branch's name in the branch master. Everything that can be checked here is checked before the
    head office is asked: it spends the code (and enrolls a node) as soon as it answers."""
    invite = check_join(home, code, via)
    keys = NodeKeys.generate()
    request = enroll.request(invite, keys)
    enrolled = await _enroll(via, invite, request, keys)
    return Node.join(home, enrolled, keys), enrolled.grant.office_name


def check_join(home: Path, code: str, via: str | None) -> InviteCode:
    """The code as parsed, once the code, the address and the home are all fit for a join."""
    invite = InviteCode.parse(code)
    if via is not None:
        enrollment.check_address(via)
    check_new_home(home)
    return invite


async def _enroll(via: str | None, invite: InviteCode, request: bytes, keys: NodeKeys) -> enroll.Enrollment:
    if via is not None:
        return enroll.read_reply(await enrollment.exchange(via, request), invite, request, keys)
    errors = []
    for url in await discovery.find_any(LAN_SEARCH_SECONDS):
        try:
            return enroll.read_reply(await enrollment.exchange(url, request), invite, request, keys)
        except P2PSyncError as exc:
            errors.append(f"{url}: {exc}")
    if errors:
        raise P2PSyncError("no node on the LAN enrolled this code; " + "; ".join(errors[:3]))
    raise P2PSyncError("no head office found on the LAN; give its address with --via wss://HOST:PORT")
