"""The reports accountants read: trial balance, ledger statement, day book, profit and loss,
balance sheet. Built from balances the store computes; amounts come out as two-place `Decimal`."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from p2psync.books.money import to_decimal

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


def balance_sheet(balances: list[LedgerBalance], scope: str) -> Report:
    net_profit = profit_and_loss(balances, scope)["net_profit"]
    liabilities: dict[str, Decimal] = {}
    assets: dict[str, Decimal] = {}
    for bal in balances:
        if bal.nature in ("income", "expense") or not bal.closing:
            continue
        if bal.nature == "asset":
            assets[bal.primary] = assets.get(bal.primary, to_decimal(0)) + to_decimal(bal.closing)
        else:
            liabilities[bal.primary] = liabilities.get(bal.primary, to_decimal(0)) + to_decimal(-bal.closing)
    if net_profit:
        liabilities["Profit & Loss A/c"] = net_profit
    total_l = sum(liabilities.values(), to_decimal(0))
    total_a = sum(assets.values(), to_decimal(0))
    difference = total_a - total_l
    if difference:
        liabilities["Difference in opening balances"] = difference
        total_l += difference
    return {
        "report": "balance-sheet", "scope": scope,
        "liabilities": [{"group": k, "amount": v} for k, v in sorted(liabilities.items())],
        "assets": [{"group": k, "amount": v} for k, v in sorted(assets.items())],
        "total_liabilities": total_l, "total_assets": total_a,
    }


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
