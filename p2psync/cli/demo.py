"""``p2psync demo``: a head office and two branches on this machine, end to end.

The three offices run in this process and hand each other their changes directly; the same changes
travel over encrypted websocket links once the network layer is in place.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from pathlib import Path

import click

from p2psync.books import reports
from p2psync.books.drafts import make_draft
from p2psync.books.importer import ImportedDraft
from p2psync.cli import render
from p2psync.node import Node, registrar
from p2psync.store import queries

LEDGERS = [("Cash", "Cash-in-Hand", "2,00,000"), ("HDFC Bank", "Bank Accounts", "5,00,000"),
           ("Capital", "Capital Account", "7,00,000"), ("Sales", "Sales Accounts", None),
           ("Purchases", "Purchase Accounts", None), ("Rent", "Indirect Expenses", None),
           ("Salaries", "Indirect Expenses", None), ("Sharma Traders", "Sundry Debtors", None)]


def _exchange(nodes: list[Node]) -> int:
    moved = 0
    for source in nodes:
        for target in nodes:
            if source is not target:
                target.adopt_policy(source.policy_blob())
                moved += target.receive(source.entries(target.vectors())).applied
    return moved


def _trial_balance(node: Node) -> dict:
    with node.db.read() as session:
        return reports.trial_balance(queries.balances(session), "consolidated")


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the three offices' data directories and print where.")
@click.option("--vouchers", default=200, show_default=True, help="Vouchers posted at each office.")
def demo_cmd(keep: bool, vouchers: int) -> None:
    """A head office and two branches on this machine: post at every office, exchange, compare."""
    base = Path(tempfile.mkdtemp(prefix="p2psync-demo-"))
    rng = random.Random(7)
    render.info(f"Creating head office HO and branches BR1, BR2 in {base if keep else 'a temporary directory'}")
    ho = Node.create_head(base / "ho", "Demo Traders Pvt Ltd", "HO", "Head Office")
    render.info(f"Registration ID {ho.registration_id}")
    ho.add_office("BR1", "Pune Branch")
    ho.add_office("BR2", "Nagpur Branch")
    for name, group, opening in LEDGERS:
        ho.add_ledger(name, group, opening)
    branches = [registrar.enroll_here(ho, base / code.lower(), code) for code in ("BR1", "BR2")]
    render.info("Registered BR1 and BR2 with one-time codes")
    nodes = [ho, *branches]
    render.info(f"Sync company details: {_exchange(nodes)} changes sent from the head office to the branches")
    with render.err.status("Posting vouchers at every office"):
        for node in nodes:
            drafts = []
            for i in range(vouchers):
                amount = f"{rng.randint(100, 50_000)}.{rng.randint(0, 99):02d}"
                day = f"2026-04-{rng.randint(1, 30):02d}"
                kind, dr, cr = rng.choice([("sales", "Cash", "Sales"), ("payment", "Rent", "Cash"),
                                           ("receipt", "HDFC Bank", "Sales"), ("purchase", "Purchases", "HDFC Bank"),
                                           ("contra", "HDFC Bank", "Cash")])
                drafts.append(make_draft(kind, day, [f"{dr}={amount}"], [f"{cr}={amount}"],
                                         f"{node.identity.office} voucher {i + 1}"))
            node.post_many([ImportedDraft(f"voucher {n}", d) for n, d in enumerate(drafts, 1)])
    render.info(f"Posted {vouchers} vouchers at each of HO, BR1 and BR2")
    render.info(f"Exchanged {_exchange(nodes)} changes between the three offices")
    balances = [_trial_balance(node) for node in nodes]
    tb = balances[0]
    render.table("Consolidated trial balance (identical at HO, BR1 and BR2)", ["Ledger", "Debit", "Credit"],
                 [[r["ledger"], render.money(r["debit"]), render.money(r["credit"])] for r in tb["rows"]],
                 numeric={1, 2}, footer=["Total", render.money(tb["total"]["debit"], False),
                                         render.money(tb["total"]["credit"], False)])
    same = all(b == tb for b in balances)
    for node in nodes:
        node.close()
    if not keep:
        shutil.rmtree(base, ignore_errors=True)
    if not same:
        raise click.ClickException("the offices' trial balances differ")
    render.info("All three offices hold identical books.")
