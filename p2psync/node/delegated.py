"""Book writes that a command hands to the node running on its home.

``voucher post``, ``amend``, ``cancel`` and ``ledger add`` first ask the node running on their home,
over the control channel, to make the write. That node has the books open: it posts through its group
commit and sends the entry to its links at once, and the command loads neither the store nor the ORM
(most of a command's start-up). With no node running the command writes itself, as before. Either
way the same `Node` methods judge the write, and an error comes back word for word.

A command that asked never writes itself after the node took the request (a node that does not
answer in time may still make the write): only "no node here" and "a node that takes no writes" (of
an older version) send it to the direct path.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from p2psync.books.drafts import make_draft
from p2psync.canonical import report_json
from p2psync.errors import InvalidInput, P2PSyncError
from p2psync.node import views

if TYPE_CHECKING:
    from p2psync.books.drafts import Draft
    from p2psync.books.model import Revision
    from p2psync.node.runtime import NodeRuntime

POST, AMEND, CANCEL, LEDGER_ADD = "voucher-post", "voucher-amend", "voucher-cancel", "ledger-add"
WRITES = frozenset({POST, AMEND, CANCEL, LEDGER_ADD})
#: A write waits for its durable commit, some milliseconds; a node that takes longer than this is stuck.
TIMEOUT = 60.0
#: How a node answers a command it does not know: one of an older version, which takes no writes.
UNKNOWN = "unknown command"

logger = logging.getLogger(__name__)


def ask(home: Path, command: str, args: dict[str, Any]) -> dict[str, Any] | None:
    """The data of the write made by the node running on `home`; None when no node that takes
    writes runs there (the caller then writes itself). The node's refusal is raised as it was said."""
    from p2psync.node import control  # asyncio and the socket: only for the commands that write

    try:
        reply = control.request(home, command, TIMEOUT, args)
    except P2PSyncError as exc:
        if not str(exc).startswith(control.NO_ANSWER):
            raise
        raise P2PSyncError(f"{exc}; it may still make this change: look (voucher list, ledger list) "
                           "before trying again") from None
    if reply is None:
        return None
    data = reply.get("data")
    if isinstance(data, dict):
        return data
    error = str(reply.get("error") or "the running node gave no answer to this change")
    if error.startswith(UNKNOWN):
        return None
    raise P2PSyncError(error)


async def answer(runtime: NodeRuntime, command: str, args: dict[str, Any]) -> dict[str, Any]:
    """The running node's side: make the write, answer its data or why it was refused."""
    try:
        return {"data": await _write(runtime, command, args)}
    except P2PSyncError as exc:
        return {"error": str(exc)}
    except Exception:  # a bug: the node keeps serving, the command says where to look
        logger.exception("a %s asked by a command failed", command)
        return {"error": f"the running node failed to make this change ({command}); its log says why"}


async def _write(runtime: NodeRuntime, command: str, args: dict[str, Any]) -> dict[str, Any]:
    node = runtime.node
    if command == LEDGER_ADD:
        opening = args.get("opening")
        if opening is not None and not isinstance(opening, str):
            raise InvalidInput("malformed request: opening is not text")
        record = await runtime.call(node.add_ledger, _text(args, "name"), _text(args, "group"), opening)
        await runtime.notify()
        return {"name": record.name, "group": record.group}
    rev: Revision
    if command == POST:
        rev = await runtime.post(_draft(args, _text(args, "type")))
    elif command == AMEND:
        number = _text(args, "number")
        kind = args.get("type") or await runtime.call(views.voucher_type, node, number)
        rev = await runtime.call(node.amend, number, _draft(args, _as_text(kind, "type")))
        await runtime.notify()
    elif command == CANCEL:
        rev = await runtime.call(node.cancel, _text(args, "number"), _text(args, "reason"))
        await runtime.notify()
    else:
        raise InvalidInput(f"{UNKNOWN} {command[:40]!r}")
    data = await runtime.call(views.revision_posted, node, rev)
    return dict(json.loads(report_json(data)))  # money as decimal text, as ``--json`` prints it


def _draft(args: dict[str, Any], kind: str) -> Draft:
    return make_draft(kind, _text(args, "date"), _texts(args, "dr"), _texts(args, "cr"), _text(args, "narration"))


def _text(args: dict[str, Any], key: str) -> str:
    return _as_text(args.get(key), key)


def _as_text(value: object, key: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"malformed request: {key} is not text")
    return value


def _texts(args: dict[str, Any], key: str) -> list[str]:
    values = args.get(key)
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise InvalidInput(f"malformed request: {key} is not a list of text")
    return values
