"""Commands on the books: groups, ledgers, vouchers, reports, conflicts."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from p2psync.books.drafts import make_draft
from p2psync.books.model import VoucherType
from p2psync.books.money import to_decimal
from p2psync.cli import render
from p2psync.cli.audit_commands import audit_trail_cmd
from p2psync.cli.context import home_option, json_option, open_node
from p2psync.cli.interoffice_commands import report_inter_office_cmd
from p2psync.errors import StoreError
from p2psync.localtime import local_time, zone_name
from p2psync.node import delegated, views
from p2psync.node.home import DB_FILE, resolve_home

office_option = click.option("--office", default=None, help="One office's books (default: consolidated).")
period_options = [
    click.option("--from", "start", default=None, help="First date of the period."),
    click.option("--to", "end", default=None, help="Last date of the period."),
]


def with_period(func):  # type: ignore[no-untyped-def]
    for option in reversed(period_options):
        func = option(func)
    return func


# ---------------------------------------------------------------- groups


@click.group("group")
def group() -> None:
    """Account groups: the predefined ones and your sub-groups."""


@group.command("add")
@click.argument("name")
@click.option("--under", "parent", required=True, help="The parent group.")
@home_option
def group_add(home: str | None, name: str, parent: str) -> None:
    """Add sub-group NAME under an existing group."""
    with open_node(home) as node:
        record = node.add_group(name, parent)
        render.info(f"Added group {record.name} under {record.parent}")


@group.command("list")
@json_option
@home_option
def group_list(home: str | None, as_json: bool) -> None:
    """List every group with its nature."""
    with open_node(home) as node:
        data = views.groups(node)
    if as_json:
        render.print_json(data)
    else:
        render.table("Account groups", ["Group", "Under", "Nature"],
                     [[g["name"], g["parent"] or "(primary)", g["nature"]] for g in data])


# ---------------------------------------------------------------- ledgers


@click.group("ledger")
def ledger() -> None:
    """Ledgers and their opening balances."""


@ledger.command("add")
@click.argument("name")
@click.option("--group", "group_name", required=True, help="The account group, e.g. 'Sundry Debtors'.")
@click.option("--opening", default=None, help="This office's opening balance: AMOUNT [Dr|Cr].")
@home_option
def ledger_add(home: str | None, name: str, group_name: str, opening: str | None) -> None:
    """Create ledger NAME under a group."""
    data = delegated.ask(resolve_home(home), delegated.LEDGER_ADD, {"name": name, "group": group_name, "opening": opening})
    if data is None:
        with open_node(home) as node:
            record = node.add_ledger(name, group_name, opening)
            data = {"name": record.name, "group": record.group}
    render.info(f"Added ledger {data['name']} under {data['group']}")


@ledger.command("opening")
@click.argument("name")
@click.argument("amount")
@click.option("--office", default=None, help="Head office only: set another office's opening (default: this office).")
@home_option
def ledger_opening(home: str | None, name: str, amount: str, office: str | None) -> None:
    """Set this office's opening balance of ledger NAME: AMOUNT [Dr|Cr]."""
    with open_node(home) as node:
        opening = node.set_opening(name, amount, office)
        side = "Dr" if opening.paise >= 0 else "Cr"
        render.info(f"Opening balance of {opening.ledger} at {opening.office}: "
                    f"{render.money(to_decimal(abs(opening.paise)), blank_zero=False)} {side}")


@ledger.command("list")
@json_option
@home_option
def ledger_list(home: str | None, as_json: bool) -> None:
    """List the ledgers."""
    with open_node(home) as node:
        data = views.ledgers(node)
    if as_json:
        render.print_json(data)
    else:
        render.table("Ledgers", ["Ledger", "Group", "Nature", "Created at"],
                     [[d["name"], d["group"], d["nature"], d["created_at_office"]] for d in data])


# ---------------------------------------------------------------- vouchers


@click.group("voucher")
def voucher() -> None:
    """Post, amend, cancel, list and import vouchers."""


def voucher_fields(func):  # type: ignore[no-untyped-def]
    for option in reversed([
        click.option("--date", "date", required=True, help="Voucher date (2026-04-01 or 01-04-2026)."),
        click.option("--dr", "debits", multiple=True, required=True, metavar="LEDGER=AMOUNT", help="A debit line."),
        click.option("--cr", "credits", multiple=True, required=True, metavar="LEDGER=AMOUNT", help="A credit line."),
        click.option("--narration", default="", help="Narration."),
    ]):
        func = option(func)
    return func


@voucher.command("post")
@click.option("--type", "kind", required=True,
              help=f"One of {', '.join(t.value for t in VoucherType)}.")
@voucher_fields
@json_option
@home_option
def voucher_post(home: str | None, kind: str, date: str, debits: tuple[str, ...], credits: tuple[str, ...],
                 narration: str, as_json: bool) -> None:
    """Post a voucher; debits must equal credits."""
    draft = make_draft(kind, date, list(debits), list(credits), narration)  # a mistyped line: said here
    data = delegated.ask(resolve_home(home), delegated.POST, {"type": kind, **_fields(date, debits, credits, narration)})
    if data is None:
        with open_node(home) as node:
            data = views.revision_posted(node, node.post(draft))
    _show_revision(data, "Posted", as_json)


def _fields(date: str, debits: tuple[str, ...], credits: tuple[str, ...], narration: str) -> dict[str, Any]:
    return {"date": date, "dr": list(debits), "cr": list(credits), "narration": narration}


@voucher.command("amend")
@click.argument("number")
@click.option("--type", "kind", default=None, help="The voucher's type (it cannot change).")
@voucher_fields
@json_option
@home_option
def voucher_amend(home: str | None, number: str, kind: str | None, date: str, debits: tuple[str, ...],
                  credits: tuple[str, ...], narration: str, as_json: bool) -> None:
    """Replace voucher NUMBER with a new revision (the old one is kept in its history)."""
    data = delegated.ask(resolve_home(home), delegated.AMEND,
                         {"number": number, "type": kind, **_fields(date, debits, credits, narration)})
    if data is None:
        with open_node(home) as node:
            draft = make_draft(kind or views.voucher_type(node, number), date, list(debits), list(credits), narration)
            data = views.revision_posted(node, node.amend(number, draft))
    _show_revision(data, "Amended", as_json)


@voucher.command("cancel")
@click.argument("number")
@click.option("--reason", required=True, help="Why it is cancelled (kept with the voucher).")
@json_option
@home_option
def voucher_cancel(home: str | None, number: str, reason: str, as_json: bool) -> None:
    """Cancel voucher NUMBER: it is kept, marked, and excluded from balances."""
    data = delegated.ask(resolve_home(home), delegated.CANCEL, {"number": number, "reason": reason})
    if data is None:
        with open_node(home) as node:
            data = views.revision_posted(node, node.cancel(number, reason))
    _show_revision(data, "Cancelled", as_json)


def _show_revision(data: dict[str, Any], verb: str, as_json: bool) -> None:
    if as_json:
        render.print_json(data)
        _warn(data)
        return
    total = sum((Decimal(str(ln["amount"])) for ln in data["lines"] if ln["side"] == "Dr"), to_decimal(0))
    render.info(f"{verb} {VoucherType(data['type']).label} {data['number']} dated {data['date']} "
                f"for {render.money(total)}")
    _show_notes(data)


def _show_notes(data: dict[str, Any]) -> None:
    """Say what a posting leaves that the user would not otherwise notice: a voucher that will never
    leave this office, a cash balance below zero."""
    if data.get("held_back"):
        render.info(f"Note: {', '.join(data['local_only']) if isinstance(data['local_only'], list) else data['number']}"
                    f" {data['held_back']}")
    _warn(data)


def _warn(data: dict[str, Any]) -> None:
    """Warnings go to stderr, also beside ``--json`` (which holds them too), so no script misses one."""
    for warning in data.get("warnings", []):
        render.err.print(f"[bold yellow]warning:[/] {escape(warning)}", markup=True, highlight=False)


@voucher.command("list")
@office_option
@with_period
@json_option
@home_option
def voucher_list(home: str | None, office: str | None, start: str | None, end: str | None, as_json: bool) -> None:
    """List vouchers (cancelled ones marked)."""
    with open_node(home) as node:
        data = views.vouchers(node, office, start, end)
    if as_json:
        render.print_json(data)
        return
    render.table("Vouchers", ["Date", "Number", "Type", "Narration", "Amount", "Status"],
                 [[d["date"], d["number"], d["type"], d["narration"], render.money(d["amount"]),
                   "cancelled" if d["cancelled"] else ("conflict" if d["conflicts"] else "")] for d in data],
                 numeric={4})


@voucher.command("show")
@click.argument("number")
@json_option
@home_option
def voucher_show(home: str | None, number: str, as_json: bool) -> None:
    """Show voucher NUMBER with every revision and any conflict."""
    with open_node(home) as node:
        data = views.voucher(node, number)
        date_format = node.settings()["date_format"]
    if as_json:
        render.print_json({k: v for k, v in data.items() if k != "cancelled"})
        return
    cur = data["current"]
    render.table(f"{cur['number']} ({cur['type']}, {cur['date']}){' CANCELLED: ' + cur['reason'] if data['cancelled'] else ''}",
                 ["Ledger", "Debit", "Credit"],
                 [[ln["ledger"], render.money(ln["amount"]) if ln["side"] == "Dr" else "",
                   render.money(ln["amount"]) if ln["side"] == "Cr" else ""] for ln in cur["lines"]],
                 numeric={1, 2})
    if cur["narration"]:
        render.info(f"Narration: {cur['narration']}")
    lost = {r["revision"] for r in data["conflicts"]}
    render.table("History", [f"At ({zone_name()})", "Action", "Date", "Amount", "Narration", ""],
                 [[local_time(r["at"], date_format), r["action"], r["date"],
                   render.money(sum((ln["amount"] for ln in r["lines"] if ln["side"] == "Dr"), to_decimal(0))),
                   r["narration"] or r["reason"],
                   "CONFLICT: lost to the current revision" if r["revision"] in lost else
                   ("current" if r["revision"] == cur["revision"] else "")]
                  for r in data["history"]], numeric={3})


@voucher.command("import")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option
@home_option
def voucher_import(home: str | None, file: Path, as_json: bool) -> None:
    """Import vouchers from a CSV or JSON file: all of them, or none if any is wrong."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from p2psync.books.importer import read_file

    drafts = read_file(file)
    with open_node(home) as node:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=render.err, transient=True, disable=as_json or not render.err.is_terminal) as progress:
            task = progress.add_task(f"Importing {file.name}", total=len(drafts))
            revs = node.post_many(drafts, progress=lambda n: progress.update(task, completed=n))
        notes = views.posted(node, revs)
    if as_json:
        render.print_json({"imported": len(revs), "numbers": [r.number for r in revs], **notes})
        _warn(notes)
    else:
        series: dict[str, list[str]] = {}
        for rev in revs:
            series.setdefault(rev.content.type.label, []).append(rev.number)
        ranges = ", ".join(f"{n[0]} to {n[-1]}" if len(n) > 1 else n[0] for n in series.values())
        render.info(f"Imported {len(revs)} voucher{'s' if len(revs) != 1 else ''} from {file.name}: {ranges}")
        if notes["local_only"]:
            notes = {**notes, "local_only": [f"{len(notes['local_only'])} of them"]}
        _show_notes(notes)


# ---------------------------------------------------------------- reports


@click.group("report")
def report() -> None:
    """Trial balance, ledger statement, day book, balance sheet, profit and loss, audit trail."""


report.add_command(audit_trail_cmd)
report.add_command(report_inter_office_cmd)


@report.command("trial-balance")
@office_option
@click.option("--to", "end", default=None, help="As on this date.")
@json_option
@home_option
def report_tb(home: str | None, office: str | None, end: str | None, as_json: bool) -> None:
    """Closing balance of every ledger, debits beside credits."""
    data = views.report_at(resolve_home(home), "trial-balance", office, end=end)
    if as_json:
        render.print_json(data)
        return
    render.table(f"Trial balance ({data['scope']})", ["Ledger", "Group", "Debit", "Credit"],
                 [[r["ledger"], r["group"], render.money(r["debit"]), render.money(r["credit"])] for r in data["rows"]],
                 numeric={2, 3},
                 footer=["Total", "", render.money(data["total"]["debit"], False), render.money(data["total"]["credit"], False)])
    _held_back(data)


@report.command("ledger")
@click.argument("name")
@office_option
@with_period
@json_option
@home_option
def report_ledger(home: str | None, name: str, office: str | None, start: str | None, end: str | None,
                  as_json: bool) -> None:
    """Statement of ledger NAME with a running balance."""
    data = views.report_at(resolve_home(home), "ledger", office, start, end, ledger=name)
    if as_json:
        render.print_json(data)
        return
    rows = [["", "", "Opening balance", "", "", _balance(data["opening"])]]
    rows += [[r["date"], r["number"], r["narration"], render.money(r["debit"]), render.money(r["credit"]),
              _balance(r["balance"])] for r in data["rows"]]
    render.table(f"Ledger: {data['ledger']} ({data['scope']})", ["Date", "Number", "Narration", "Debit", "Credit", "Balance"],
                 rows, numeric={3, 4, 5}, footer=["", "", "Closing balance", "", "", _balance(data["closing"])])
    _held_back(data)


def _balance(value) -> str:  # type: ignore[no-untyped-def]
    if value == 0:
        return "0.00"
    return f"{render.money(abs(value))} {'Dr' if value > 0 else 'Cr'}"


@report.command("day-book")
@office_option
@with_period
@json_option
@home_option
def report_day_book(home: str | None, office: str | None, start: str | None, end: str | None, as_json: bool) -> None:
    """Every voucher of the period, day by day, with its lines."""
    data = views.report_at(resolve_home(home), "day-book", office, start, end)
    if as_json:
        render.print_json(data)
        return
    table_rows = []
    for v in data["rows"]:
        status = " (cancelled)" if v["cancelled"] else ""
        table_rows.append([v["date"], v["number"], v["type"] + status, v["narration"], "", ""])
        table_rows += [["", "", "", f"  {ln['ledger']}", render.money(ln["debit"]), render.money(ln["credit"])]
                       for ln in v["lines"]]
    render.table(f"Day book ({data['scope']})", ["Date", "Number", "Type", "Particulars", "Debit", "Credit"],
                 table_rows, numeric={4, 5})
    _held_back(data)


@report.command("profit-loss")
@office_option
@with_period
@json_option
@home_option
def report_pl(home: str | None, office: str | None, start: str | None, end: str | None, as_json: bool) -> None:
    """Profit and loss: gross profit from direct items, net profit after indirect ones."""
    data = views.report_at(resolve_home(home), "profit-loss", office, start, end)
    if as_json:
        render.print_json(data)
        return
    rows = []
    for title, key in (("Direct incomes", "direct_incomes"), ("Direct expenses", "direct_expenses")):
        rows += [[title, "", ""]] + [["", i["ledger"], render.money(i["amount"], False)] for i in data[key]]
    rows.append(["Gross profit", "", render.money(data["gross_profit"], False)])
    for title, key in (("Indirect incomes", "indirect_incomes"), ("Indirect expenses", "indirect_expenses")):
        rows += [[title, "", ""]] + [["", i["ledger"], render.money(i["amount"], False)] for i in data[key]]
    if data["gross_profit"] < 0:
        rows[rows.index(["Gross profit", "", render.money(data["gross_profit"], False)])] = [
            "Gross loss", "", render.money(-data["gross_profit"], False)]
    net = data["net_profit"]
    render.table(f"Profit and loss ({data['scope']})", ["", "Ledger", "Amount"], rows, numeric={2},
                 footer=["Net profit" if net >= 0 else "Net loss", "", render.money(abs(net), False)])
    _held_back(data)


@report.command("balance-sheet")
@office_option
@click.option("--to", "end", default=None, help="As on this date.")
@click.option("--detail", is_flag=True, help="Show each group's sub-groups and ledgers.")
@json_option
@home_option
def report_bs(home: str | None, office: str | None, end: str | None, detail: bool, as_json: bool) -> None:
    """Liabilities and assets by group, with the profit (or loss) carried over."""
    data = views.report_at(resolve_home(home), "balance-sheet", office, end=end, detail=detail)
    if as_json:
        render.print_json(data)
        return
    left, right = _sheet_rows(data["liabilities"]), _sheet_rows(data["assets"])
    blank = ["", "", ""]
    rows = [(left[i] if i < len(left) else blank) + (right[i] if i < len(right) else blank)
            for i in range(max(len(left), len(right)))]
    total_l, total_a = render.money(data["total_liabilities"], False), render.money(data["total_assets"], False)
    render.table(f"Balance sheet ({data['scope']})", ["Liabilities", "", "Amount", "Assets", "", "Amount"], rows,
                 numeric={1, 2, 4, 5}, footer=["Total", "", total_l, "Total", "", total_a])
    _held_back(data)


def _sheet_rows(items: list[dict[str, Any]], depth: int = 0) -> list[list[str]]:
    """One side of the balance sheet as rows: a primary group's total in the outer amount column, the
    sub-groups and ledgers under it indented, with their amounts in the inner column (as Tally does)."""
    rows = []
    for item in items:
        amount = render.money(item["amount"], False)
        rows.append(["  " * depth + item["group"], amount if depth else "", "" if depth else amount])
        rows += _sheet_rows(item.get("groups", []), depth + 1)
        rows += [["  " * (depth + 1) + led["ledger"], render.money(led["amount"], False), ""]
                 for led in item.get("ledgers", [])]
    return rows


def _held_back(data: dict[str, Any]) -> None:
    """Under a report: how many of its vouchers never leave this office, and why."""
    count = data.get("local_only", 0)
    if count:
        render.info(f"{count} voucher{'s' if count != 1 else ''} in this report {'are' if count != 1 else 'is'} "
                    f"dated before the sync-after date{' ' + data['sync_after'] if data.get('sync_after') else ''}: kept in this office's books only, "
                    "never sent to other offices.")


# ---------------------------------------------------------------- conflicts and maintenance


@click.group("conflicts", invoke_without_command=True)
@json_option
@home_option
@click.pass_context
def conflicts_cmd(ctx: click.Context, home: str | None, as_json: bool) -> None:
    """Concurrent edits that lost: kept, listed here until settled ('conflicts resolve') or amended."""
    if ctx.invoked_subcommand is not None:
        return
    with open_node(home) as node:
        data = views.conflicts(node)
    if as_json:
        render.print_json(data)
    elif not data:
        render.info("No conflicts.")
    else:
        _show_conflicts(data)


def _show_conflicts(data: list[dict[str, Any]]) -> None:
    others = [d for d in data if d["kind"] != "voucher"]
    shown: set[str] = set()
    for item in data:
        if item["kind"] != "voucher" or item["subject"] in shown:
            continue
        shown.add(item["subject"])
        render.table(f"Voucher {item['number']}: the current version won because {item['why']}",
                     ["Version", "Action", "Office", "At (UTC)", "Date", "Amount", "Narration / reason", ""],
                     [[v["revision"][:8], v["action"], v["made_at_office"], v["at"][:19].replace("T", " "), v["date"],
                       render.money(v["amount"]), v["reason"] or v["narration"], "current" if v["current"] else "lost"]
                      for v in item["versions"]], numeric={5})
    if others:
        render.table("Conflicts", ["Kind", "Subject", "Kept (current)", "Lost (kept in history)"],
                     [[d["kind"], d["subject"], d["winner"], d["loser"]] for d in others])
    if shown:
        render.info("Settle one with 'p2psync conflicts resolve NUMBER --keep-cancellation' or "
                    "'--restore VERSION'.")


@conflicts_cmd.command("resolve")
@click.argument("number")
@click.option("--keep-cancellation", "keep", is_flag=True, help="The voucher stays cancelled.")
@click.option("--restore", default=None, metavar="VERSION", help="Keep this version (its first 8 characters do).")
@json_option
@home_option
def conflicts_resolve(home: str | None, number: str, keep: bool, restore: str | None, as_json: bool) -> None:
    """Settle the conflict of voucher NUMBER, the same way at every office."""
    if keep == (restore is not None):
        raise click.UsageError("give exactly one of --keep-cancellation and --restore VERSION")
    with open_node(home) as node:
        data = views.settle_conflict(node, number, restore)
    if as_json:
        render.print_json(data)
        return
    for rev in data["made"]:
        if rev["action"] == "post":
            render.info(f"Posted {rev['number']} dated {rev['date']}: {rev['narration']}")
        elif rev["action"] == "cancel":
            render.info(f"Settled {data['number']}: it stays cancelled ({rev['reason']})")
        else:
            render.info(f"Settled {data['number']}: restored the chosen version as its current one")


@click.command("rebuild")
@home_option
def rebuild_cmd(home: str | None) -> None:
    """Rebuild snapshots and report tables from the entry log (the source of truth)."""
    from p2psync.store import health  # the store's tables: only for the commands that open the node

    path = resolve_home(home) / DB_FILE
    found = health.inspect(path)  # damage beyond the caches would stop the rebuild half way
    if not found.usable:
        raise StoreError(found.problem(path))
    with open_node(home) as node:
        node.store.rebuild()
    render.info("Rebuilt snapshots and report tables from the entry log.")
