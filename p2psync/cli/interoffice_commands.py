"""Inter-office work: ``inter-office list|accept|dispute`` and ``report inter-office``.

Heavy modules (the node, the books) are imported inside the commands, so that ``p2psync --help``
and every other command start without them.
"""

from __future__ import annotations

from typing import Any

import click

from p2psync.cli import render
from p2psync.cli.context import home_option, json_option


@click.group("inter-office")
def inter_office_cmd() -> None:
    """Counterparts of other offices' vouchers against this office's @ accounts: list, accept, dispute."""


@inter_office_cmd.command("list")
@json_option
@home_option
def io_list(home: str | None, as_json: bool) -> None:
    """Other offices' vouchers waiting for this office (pending), disputed, or out of step."""
    from p2psync.cli.context import open_node
    from p2psync.node import interoffice

    with open_node(home) as node:
        data = interoffice.counterparts(node)
    if as_json:
        render.print_json(data)
        return
    render.table("Inter-office counterparts", ["Ref", "From", "Date", "Amount", "Their side", "Status", "Particulars"],
                 [[d["ref"], d["office"], d["date"], render.money(d["amount"]), d["side"], d["status"], _why(d)]
                  for d in data], numeric={3})
    if not data:
        render.info("Nothing waiting: every counterpart is accepted or disputed.")


def _why(item: dict[str, Any]) -> str:
    if item["status"] == "pending":
        return f"{item['age_days']} days old"
    if item["status"] == "disputed":
        return item["reason"]
    return f"{item['why']} (mirror {item['counterpart']})" if item.get("counterpart") else item["why"]


@inter_office_cmd.command("accept")
@click.argument("ref")
@click.option("--dr", "debits", multiple=True, help="This office's debit line LEDGER[=AMOUNT] (repeatable).")
@click.option("--cr", "credits", multiple=True, help="This office's credit line LEDGER[=AMOUNT] (repeatable).")
@click.option("--type", "kind", default=None, help="Voucher type (default: Receipt, Payment or Journal by its lines).")
@click.option("--date", default=None, help="Date of this office's voucher (default: the counterpart's).")
@click.option("--narration", default=None, help="Narration (default: the counterpart's).")
@json_option
@home_option
def io_accept(home: str | None, ref: str, debits: tuple[str, ...], credits: tuple[str, ...], kind: str | None,
              date: str | None, narration: str | None, as_json: bool) -> None:
    """Post the counterpart of another office's voucher REF into this office's own books."""
    from p2psync.books.money import format_paise
    from p2psync.cli.context import open_node
    from p2psync.node import interoffice, views

    with open_node(home) as node:
        rev = interoffice.accept(node, ref, list(debits), list(credits), kind, date, narration)
        data = views.revision_posted(node, rev)
    if as_json:
        render.print_json(data)
        return
    total = sum(ln.paise for ln in rev.content.lines if ln.side.value == "Dr")
    render.info(f"Accepted {ref.strip().upper()} as {rev.content.type.label} {rev.number} dated "
                f"{rev.content.date} for {format_paise(total)}")


@inter_office_cmd.command("dispute")
@click.argument("ref")
@click.option("--reason", required=True, help="Why this office does not take it into its books.")
@json_option
@home_option
def io_dispute(home: str | None, ref: str, reason: str, as_json: bool) -> None:
    """Record that this office disputes another office's voucher REF (its books are not touched)."""
    from p2psync.cli.context import open_node
    from p2psync.node import interoffice

    with open_node(home) as node:
        record = interoffice.dispute(node, ref, reason)
    if as_json:
        render.print_json({"ref": record.ref, "office": record.office, "reason": record.reason, "at": record.at})
        return
    render.info(f"Disputed {record.ref}: {record.reason}")


@click.command("inter-office")
@click.option("--office", default=None, help="Only the pairs this office is in (default: every pair).")
@json_option
@home_option
def report_inter_office_cmd(home: str | None, office: str | None, as_json: bool) -> None:
    """Reconciliation of inter-office accounts, per pair of offices."""
    from p2psync.cli.context import open_node
    from p2psync.node import interoffice

    with open_node(home) as node:
        data = interoffice.report(node, office)
    if as_json:
        render.print_json(data)
        return
    for pair in data["pairs"]:
        first, second = pair["offices"]
        balances = pair["balances"]
        render.table(f"Inter-office {first} / {second}: {first}'s @{second} {_side(balances[first])}, "
                     f"{second}'s @{first} {_side(balances[second])}",
                     ["Status", "Office", "Ref", "Date", "Amount", "Counterpart", "Particulars"],
                     [[i["status"], i["office"], i["ref"], i["date"], render.money(i["amount"]), i["counterpart"] or "",
                       _particulars(i)] for i in pair["items"]], numeric={4})
        totals = pair["totals"]
        render.info(", ".join(f"{status} {render.money(amount, False)}" for status, amount in totals.items()))
    if not data["pairs"]:
        render.info("No inter-office traffic.")


def _side(amount: Any) -> str:
    return f"{render.money(abs(amount), False)} {'Dr' if amount >= 0 else 'Cr'}"


def _particulars(item: dict[str, Any]) -> str:
    if item["status"] == "in transit":
        return f"{item['age_days']} days; {item['why']}".rstrip("; ")
    return item["reason"] or item["why"]
