"""Account groups: the predefined tree accountants know from Tally and Saral, with each nature.

Predefined groups live in code, identical on every node, so they never need syncing and can never
conflict. User sub-groups live in the masters document and hang under any group.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from enum import Enum


class Nature(str, Enum):
    ASSET = "asset"
    LIABILITY = "liability"
    EQUITY = "equity"
    INCOME = "income"
    EXPENSE = "expense"

    @property
    def debit_normal(self) -> bool:
        """Whether a balance of this nature is normally a debit (assets and expenses)."""
        return self in (Nature.ASSET, Nature.EXPENSE)



@dataclass(frozen=True)
class Group:
    name: str
    nature: Nature
    parent: str | None = None
    #: Direct incomes/expenses feed the gross profit; indirect ones only the net profit.
    direct: bool = False
    predefined: bool = True

    @property
    def key(self) -> str:
        return group_key(self.name)


@functools.lru_cache(maxsize=4096)
def group_key(name: str) -> str:
    """The case-insensitive identity of a group or ledger name (cached: every voucher checked or
    materialized asks it of each of its ledgers, and a chart has few)."""
    return " ".join(name.split()).casefold()


CAPITAL = "Capital Account"
LOANS = "Loans (Liability)"
CURRENT_LIABILITIES = "Current Liabilities"
CURRENT_ASSETS = "Current Assets"
BANK_ACCOUNTS = "Bank Accounts"
CASH_IN_HAND = "Cash-in-Hand"
BANK_OD = "Bank OD A/c"
SALES = "Sales Accounts"
PURCHASES = "Purchase Accounts"

PREDEFINED: tuple[Group, ...] = (
    Group(CAPITAL, Nature.EQUITY),
    Group("Reserves & Surplus", Nature.EQUITY, CAPITAL),
    Group(LOANS, Nature.LIABILITY),
    Group(BANK_OD, Nature.LIABILITY, LOANS),
    Group("Secured Loans", Nature.LIABILITY, LOANS),
    Group("Unsecured Loans", Nature.LIABILITY, LOANS),
    Group(CURRENT_LIABILITIES, Nature.LIABILITY),
    Group("Duties & Taxes", Nature.LIABILITY, CURRENT_LIABILITIES),
    Group("Provisions", Nature.LIABILITY, CURRENT_LIABILITIES),
    Group("Sundry Creditors", Nature.LIABILITY, CURRENT_LIABILITIES),
    Group("Branch / Divisions", Nature.LIABILITY),
    Group("Suspense A/c", Nature.LIABILITY),
    Group("Fixed Assets", Nature.ASSET),
    Group("Investments", Nature.ASSET),
    Group(CURRENT_ASSETS, Nature.ASSET),
    Group(BANK_ACCOUNTS, Nature.ASSET, CURRENT_ASSETS),
    Group(CASH_IN_HAND, Nature.ASSET, CURRENT_ASSETS),
    Group("Deposits (Asset)", Nature.ASSET, CURRENT_ASSETS),
    Group("Loans & Advances (Asset)", Nature.ASSET, CURRENT_ASSETS),
    Group("Stock-in-Hand", Nature.ASSET, CURRENT_ASSETS),
    Group("Sundry Debtors", Nature.ASSET, CURRENT_ASSETS),
    Group("Misc. Expenses (Asset)", Nature.ASSET),
    Group(SALES, Nature.INCOME, direct=True),
    Group("Direct Incomes", Nature.INCOME, direct=True),
    Group("Indirect Incomes", Nature.INCOME),
    Group(PURCHASES, Nature.EXPENSE, direct=True),
    Group("Direct Expenses", Nature.EXPENSE, direct=True),
    Group("Indirect Expenses", Nature.EXPENSE),
)

#: Groups whose ledgers hold money: the ones Contra, Payment and Receipt move.
CASH_AND_BANK = frozenset(group_key(n) for n in (CASH_IN_HAND, BANK_ACCOUNTS, BANK_OD))


class GroupTree:
    """Predefined groups plus user sub-groups, answering ancestry questions."""

    def __init__(self, extra: list[Group] | tuple[Group, ...] = ()) -> None:
        self._groups: dict[str, Group] = {g.key: g for g in PREDEFINED}
        for group in extra:
            self._groups.setdefault(group.key, group)
        #: The keys of each name's lineage, by name as asked: the tree never changes, and the type
        #: rules ask it for every line of every voucher posted.
        self._ancestry: dict[str, frozenset[str]] = {}

    def get(self, name: str) -> Group | None:
        return self._groups.get(group_key(name))

    def __contains__(self, name: str) -> bool:
        return group_key(name) in self._groups

    def all(self) -> list[Group]:
        return list(self._groups.values())

    def lineage(self, name: str) -> list[Group]:
        """The group and its ancestors up to the primary group (cycle-safe)."""
        chain: list[Group] = []
        seen: set[str] = set()
        group = self.get(name)
        while group is not None and group.key not in seen:
            chain.append(group)
            seen.add(group.key)
            group = self.get(group.parent) if group.parent else None
        return chain

    def primary(self, name: str) -> Group | None:
        chain = self.lineage(name)
        return chain[-1] if chain else None

    def is_under(self, name: str, ancestors: frozenset[str]) -> bool:
        keys = self._ancestry.get(name)
        if keys is None:
            keys = self._ancestry[name] = frozenset(g.key for g in self.lineage(name))
        return not keys.isdisjoint(ancestors)

    def is_direct(self, name: str) -> bool:
        return any(g.direct for g in self.lineage(name))
