"""A command that writes to the books of a home whose node is running hands the write to that node
(`p2psync.node.delegated`): the node makes it with its books open, the command prints what it would
have printed, and a refusal reads the same. The node here runs in this process, so that the test can
see that it, and not the command, sealed the entry; the commands are real processes."""

from __future__ import annotations

import asyncio
import json
import shutil
from decimal import Decimal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from procs import cli, make_org, refused, voucher_args
from test_cli_startup import heavy_modules_after

from p2psync.cli.serve_commands import _control_handler
from p2psync.node import control, delegated, views
from p2psync.node.office import Node
from p2psync.node.runtime import NodeRuntime

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@asynccontextmanager
async def running(home: Path, handler: Callable[[NodeRuntime], Handler] | None = None) -> AsyncIterator[NodeRuntime]:
    """The node of `home` serving its control channel in this process, as ``p2psync run`` does."""
    node = Node.open(home)
    runtime = NodeRuntime(node, host="127.0.0.1", port=0, mdns=False)
    handle = handler(runtime) if handler else _control_handler(runtime, None, asyncio.Event())
    channel = await control.serve(home, handle)
    await runtime.start()
    try:
        yield runtime
    finally:
        channel.close()
        await runtime.stop()
        control.socket_path(home).unlink(missing_ok=True)
        node.close()


async def command(home: Path, *args: str, check: bool = True) -> Any:
    return await asyncio.to_thread(cli, home, *args, check=check)


def numbers(home: Path) -> list[str]:
    node = Node.open(home)
    try:
        return [v["number"] for v in views.vouchers(node)]
    finally:
        node.close()


def test_post_amend_cancel_and_ledger_add_are_made_by_the_running_node(tmp_path: Path) -> None:
    (ho,) = make_org(tmp_path, ())

    async def scenario() -> None:
        async with running(ho) as runtime:
            node = runtime.node
            sealed = node.store.last_sealed
            added = await command(ho, "ledger", "add", "Freight", "--group", "Direct Expenses")
            assert added.stdout.strip() == "Added ledger Freight under Direct Expenses"
            assert node.store.last_sealed > sealed, "the running node did not make the ledger"
            sealed = node.store.last_sealed
            posted = json.loads((await command(ho, *voucher_args("payment", "2026-04-02", "Freight", "Cash", "125.50",
                                                                 "by the CLI"))).stdout)
            assert (posted["number"], posted["narration"], posted["lines"][0]["amount"]) == (
                "HO/PMT/00001", "by the CLI", "125.50")
            assert node.store.last_sealed > sealed
            text = await command(ho, "voucher", "post", "--type", "receipt", "--date", "2026-04-03",
                                 "--dr", "Cash=1000", "--cr", "Sales=1000")
            assert text.stdout.strip() == "Posted Receipt HO/RCT/00001 dated 2026-04-03 for 1,000.00"
            amended = await command(ho, "voucher", "amend", "HO/PMT/00001", "--date", "2026-04-02",
                                    "--dr", "Freight=130", "--cr", "Cash=130")
            assert amended.stdout.strip() == "Amended Payment HO/PMT/00001 dated 2026-04-02 for 130.00"
            cancelled = await command(ho, "voucher", "cancel", "HO/RCT/00001", "--reason", "twice")
            assert cancelled.stdout.strip() == "Cancelled Receipt HO/RCT/00001 dated 2026-04-03 for 1,000.00"
            assert {v["number"]: (v["amount"], v["cancelled"]) for v in views.vouchers(node)} == {
                "HO/PMT/00001": (Decimal("130.00"), False), "HO/RCT/00001": (Decimal("1000.00"), True)}
            # and the command loaded none of the store, the ORM or the CRDT library to do it
            post = ["--home", str(ho), "voucher", "post", "--type", "payment", "--date", "2026-04-05",
                    "--dr", "Freight=1", "--cr", "Cash=1"]
            assert await asyncio.to_thread(heavy_modules_after, f"from p2psync.cli.main import main\nmain({post!r})") == []
            assert "HO/PMT/00002" in [v["number"] for v in views.vouchers(node)]

    asyncio.run(scenario())


def test_the_running_node_refuses_as_the_command_itself_would(tmp_path: Path) -> None:
    (ho,) = make_org(tmp_path, ())
    offline = tmp_path / "copy"
    shutil.copytree(ho, offline)
    attempts = [voucher_args("payment", "2026-04-02", "Nowhere", "Cash", "5.00"),
                ("voucher", "amend", "HO/PMT/00009", "--date", "2026-04-02", "--dr", "Rent=1", "--cr", "Cash=1"),
                ("voucher", "cancel", "HO/PMT/00009", "--reason", "none such"),
                ("ledger", "add", "cash", "--group", "Cash-in-Hand")]
    expected = [refused(offline, *args) for args in attempts]

    async def scenario() -> None:
        async with running(ho) as runtime:
            sealed = runtime.node.store.last_sealed
            said = [await asyncio.to_thread(refused, ho, *args) for args in attempts]
            assert said == expected
            assert runtime.node.store.last_sealed == sealed
            assert await asyncio.to_thread(control.request, ho, "status")  # still serving

    asyncio.run(scenario())


def test_a_node_that_takes_no_writes_leaves_the_command_to_write_itself(tmp_path: Path) -> None:
    """A node of an older version answers "unknown command": the command writes, as it did then."""
    (ho,) = make_org(tmp_path, ())

    def older(_runtime: NodeRuntime) -> Handler:
        async def handle(command: str, _args: dict[str, Any]) -> dict[str, Any]:
            return {"ok": True} if command == "local-write" else {"error": f"unknown command {command!r}"}
        return handle

    async def scenario() -> None:
        async with running(ho, older) as runtime:
            sealed = runtime.node.store.last_sealed
            await command(ho, *voucher_args("receipt", "2026-04-01", "Cash", "Sales", "5.00"))
            assert runtime.node.store.last_sealed == sealed  # the command sealed it, not this node

    asyncio.run(scenario())
    assert numbers(ho) == ["HO/RCT/00001"]


def test_a_node_that_took_the_request_but_did_not_answer_is_not_written_around(tmp_path: Path) -> None:
    """The node may have made the write: the command says it got no answer, and does not post again."""
    (ho,) = make_org(tmp_path, ())

    def silent(_runtime: NodeRuntime) -> Handler:
        async def handle(command: str, _args: dict[str, Any]) -> dict[str, Any]:
            raise ConnectionResetError("gone")  # the connection closes without a reply
        return handle

    async def scenario() -> None:
        async with running(ho, silent):
            line = await asyncio.to_thread(refused, ho, *voucher_args("receipt", "2026-04-01", "Cash", "Sales", "5.00"))
            assert "the running node did not answer" in line and "before trying again" in line

    asyncio.run(scenario())
    assert numbers(ho) == []


def test_malformed_write_requests_are_refused_and_the_node_serves_on(tmp_path: Path) -> None:
    (ho,) = make_org(tmp_path, ())
    bad = [(delegated.POST, {"type": "payment", "date": "2026-04-02", "dr": "Rent=1", "cr": ["Cash=1"], "narration": ""}),
           (delegated.POST, {"type": 7, "date": "2026-04-02", "dr": ["Rent=1"], "cr": ["Cash=1"], "narration": ""}),
           (delegated.CANCEL, {"number": ["HO/PMT/00001"], "reason": "x"}),
           (delegated.LEDGER_ADD, {"name": "Fuel", "group": "Direct Expenses", "opening": 12}),
           (delegated.AMEND, {"number": "HO/PMT/00001", "type": 5, "date": "2026-04-02", "dr": [], "cr": [],
                              "narration": ""})]

    async def scenario() -> None:
        async with running(ho) as runtime:
            sealed = runtime.node.store.last_sealed
            for name, args in bad:
                reply = await asyncio.to_thread(control.request, ho, name, 10.0, args)
                assert reply is not None and reply["error"].startswith("malformed request"), (name, reply)
            assert runtime.node.store.last_sealed == sealed
            assert await asyncio.to_thread(control.request, ho, "status")

    asyncio.run(scenario())
