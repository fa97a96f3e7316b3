"""The reports accountants read: trial balance, ledger statement, day book, profit and loss,
balance sheet. Built from balances the store computes; amounts come out as two-place `Decimal`."""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass
from decimal import Decimal
from itertools import pairwise
from typing import Any

from p2psync.books.groups import PREDEFINED, group_key
from p2psync.books.money import from_decimal, to_decimal

Report = dict[str, Any]


@dataclass(frozen=True)
class LedgerBalance:
    key: str
    name: str
    group: str
    primary: str
    nature: str
    direct: bool
    opening: int  # debit positive
    debit: int
    credit: int

    @property
    def closing(self) -> int:
        return self.opening + self.debit - self.credit


@dataclass(frozen=True)
class Posting:
    date: dt.date
    number: str
    type: str
    narration: str
    paise: int  # debit positive
    office: str


def _dr_cr(paise: int) -> tuple[Decimal, Decimal]:
    return (to_decimal(paise), to_decimal(0)) if paise >= 0 else (to_decimal(0), to_decimal(-paise))


def trial_balance(balances: list[LedgerBalance], scope: str) -> Report:
    rows = []
    total_dr = total_cr = 0
    for bal in sorted(balances, key=lambda b: (b.primary, b.group, b.name)):
        if bal.closing == 0 and bal.debit == 0 and bal.credit == 0:
            continue
        debit, credit = _dr_cr(bal.closing)
        total_dr += max(bal.closing, 0)
        total_cr += max(-bal.closing, 0)
        rows.append({"ledger": bal.name, "group": bal.group, "primary": bal.primary,
                     "debit": debit, "credit": credit})
    difference = total_dr - total_cr
    report: Report = {"report": "trial-balance", "scope": scope, "rows": rows}
    if difference:
        # only opening balances can differ: every voucher is balanced
        debit, credit = _dr_cr(-difference)
        rows.append({"ledger": "Difference in opening balances", "group": "", "primary": "",
                     "debit": debit, "credit": credit})
        total_dr, total_cr = max(total_dr, total_cr), max(total_dr, total_cr)
    report["total"] = {"debit": to_decimal(total_dr), "credit": to_decimal(total_cr)}
    return report


def profit_and_loss(balances: list[LedgerBalance], scope: str) -> Report:
    def section(nature: str, direct: bool) -> list[Report]:
        sign = 1 if nature == "expense" else -1
        return [{"ledger": b.name, "group": b.group, "amount": to_decimal(sign * b.closing)}
                for b in sorted(balances, key=lambda b: (b.group, b.name))
                if b.nature == nature and b.direct == direct and b.closing]

    def total(items: list[Report]) -> Decimal:
        return sum((i["amount"] for i in items), to_decimal(0))

    direct_income, direct_expense = section("income", True), section("expense", True)
    indirect_income, indirect_expense = section("income", False), section("expense", False)
    gross = total(direct_income) - total(direct_expense)
    net = gross + total(indirect_income) - total(indirect_expense)
    return {
        "report": "profit-loss", "scope": scope,
        "direct_incomes": direct_income, "direct_expenses": direct_expense, "gross_profit": gross,
        "indirect_incomes": indirect_income, "indirect_expenses": indirect_expense, "net_profit": net,
    }


def balance_sheet(balances: list[LedgerBalance], scope: str, parents: dict[str, str | None] | None = None,
                  detail: bool = False) -> Report:
    """Liabilities beside assets by primary group, as Tally shows them; with `detail`, each group's
    sub-groups and ledgers nested under it (`parents`: each group's parent, None for a primary group).

    The net profit is carried as "Profit & Loss A/c" on the liabilities side, a loss as "Profit & Loss
    A/c" on the assets side, both positive; an imbalance of opening balances likewise goes, positive, on
    the side that is short."""
    net = from_decimal(profit_and_loss(balances, scope)["net_profit"])
    sheet = [bal for bal in balances if bal.nature not in ("income", "expense") and bal.closing]
    liabilities = _side([b for b in sheet if b.nature != "asset"], -1, parents or {}, detail)
    assets = _side([b for b in sheet if b.nature == "asset"], 1, parents or {}, detail)
    if net:
        (liabilities if net > 0 else assets).append({"group": PROFIT_AND_LOSS, "amount": to_decimal(abs(net))})
    total_l = sum((item["amount"] for item in liabilities), to_decimal(0))
    total_a = sum((item["amount"] for item in assets), to_decimal(0))
    if total_a != total_l:
        (liabilities if total_a > total_l else assets).append(
            {"group": OPENING_DIFFERENCE, "amount": abs(total_a - total_l)})
        total_l = total_a = max(total_a, total_l)
    return {"report": "balance-sheet", "scope": scope, "detail": detail, "liabilities": liabilities,
            "assets": assets, "total_liabilities": total_l, "total_assets": total_a}


PROFIT_AND_LOSS = "Profit & Loss A/c"
OPENING_DIFFERENCE = "Difference in opening balances"
#: Primary groups in the order Tally lists them; a group not here comes after, by name.
_ORDER = {group_key(g.name): i for i, g in enumerate(PREDEFINED)}


def _side(balances: list[LedgerBalance], sign: int, parents: dict[str, str | None], detail: bool) -> list[Report]:
    """One side of the balance sheet: its primary groups in Tally's order, each with its total and, with
    `detail`, its sub-groups and ledgers (`sign` -1 shows credit balances as positive)."""
    totals: dict[str, int] = defaultdict(int)
    children: dict[str, set[str]] = defaultdict(set)
    ledgers: dict[str, list[Report]] = defaultdict(list)
    primaries: set[str] = set()
    for bal in balances:
        chain = _lineage(bal.group, bal.primary, parents)
        for group, parent in pairwise(chain):
            children[parent].add(group)
        for group in chain:
            totals[group] += sign * bal.closing
        primaries.add(chain[-1])
        ledgers[bal.group].append({"ledger": bal.name, "amount": to_decimal(sign * bal.closing)})

    def entry(group: str) -> Report:
        item: Report = {"group": group, "amount": to_decimal(totals[group])}
        if detail:
            item["groups"] = [entry(g) for g in sorted(children[group], key=group_key)]
            item["ledgers"] = sorted(ledgers[group], key=lambda led: group_key(led["ledger"]))
        return item

    order = sorted(primaries, key=lambda g: (_ORDER.get(group_key(g), len(_ORDER)), group_key(g)))
    return [entry(group) for group in order if totals[group] or detail]


def _lineage(group: str, primary: str, parents: dict[str, str | None]) -> list[str]:
    """`group` and its ancestors up to `primary` (cycle-safe; without `parents`, just the two)."""
    chain = [group]
    while chain[-1] != primary and (parent := parents.get(chain[-1])) and parent not in chain:
        chain.append(parent)
    if chain[-1] != primary:
        chain.append(primary)
    return chain


def ledger_statement(name: str, opening: int, postings: list[Posting], scope: str,
                     start: dt.date | None = None) -> Report:
    balance = opening
    rows = []
    for post in postings:
        if start and post.date < start:
            balance += post.paise
            continue
        balance += post.paise
        debit, credit = _dr_cr(post.paise)
        rows.append({"date": post.date.isoformat(), "number": post.number, "type": post.type,
                     "narration": post.narration, "office": post.office,
                     "debit": debit, "credit": credit, "balance": to_decimal(balance)})
    opening_shown = balance - sum(p.paise for p in postings if not start or p.date >= start)
    return {"report": "ledger", "scope": scope, "ledger": name,
            "opening": to_decimal(opening_shown), "rows": rows, "closing": to_decimal(balance)}


def day_book(vouchers: list[Any], lines: dict[str, list[tuple[str, int]]], scope: str) -> Report:
    rows = []
    for v in vouchers:
        rows.append({
            "date": v.date, "number": v.number, "type": v.type, "office": v.office,
            "narration": v.narration, "amount": to_decimal(v.amount), "cancelled": v.cancelled,
            "lines": [{"ledger": name, "debit": _dr_cr(p)[0], "credit": _dr_cr(p)[1]}
                      for name, p in lines.get(v.number, [])],
        })
    return {"report": "day-book", "scope": scope, "rows": rows}
