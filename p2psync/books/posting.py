"""Posting rules of one office: checked where a voucher is entered (command line, dashboard, import),
never by a receiver.

A receiver must decide every received entry exactly as every other office does, so it cannot depend
on a setting one office chose. These rules only catch slips at entry: a year typed as 2126 or 1900,
and a cash balance driven below zero.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from p2psync.errors import InvalidInput, RuleViolation

#: This office's posting settings and their defaults (see `DateWindow.from_settings`).
POSTING_SETTINGS: dict[str, str | None] = {"books_begin": None, "post_ahead": "year-end", "negative_cash": "warn"}
#: Without a books-begin date, the earliest date accepted is the start of the financial year this many
#: years before the current one: Indian law asks that books be kept for eight years.
YEARS_BACK = 8
MAX_DAYS_AHEAD = 3660


def financial_year(day: dt.date) -> tuple[dt.date, dt.date]:
    """The Indian financial year (1 April to 31 March) holding `day`."""
    start_year = day.year if day.month >= 4 else day.year - 1
    return dt.date(start_year, 4, 1), dt.date(start_year + 1, 3, 31)


def year_label(day: dt.date) -> str:
    """``2026-27`` for the financial year holding `day`."""
    start, end = financial_year(day)
    return f"{start.year}-{end.year % 100:02d}"


@dataclass(frozen=True)
class DateWindow:
    """The dates this office accepts on a voucher it enters, and why each bound is where it is."""

    earliest: dt.date
    latest: dt.date
    earliest_why: str
    latest_why: str
    #: The head office's period lock (a receiver's rule, `admit.check_unlocked`, checked here too so that
    #: whoever enters a voucher is told at once rather than finding it quarantined everywhere).
    locked_until: dt.date | None = None

    @classmethod
    def from_settings(cls, settings: dict[str, str | None], today: dt.date) -> DateWindow:
        """From the office's `books_begin` (a date; default: eight financial years back) and
        `post_ahead` ('year-end', the default: the end of the current financial year; or a number of
        days after today)."""
        begin = settings.get("books_begin")
        if begin:
            earliest, early_why = dt.date.fromisoformat(begin), "the date this office's books begin"
        else:
            first = financial_year(today)[0]
            earliest = first.replace(year=first.year - YEARS_BACK)
            early_why = f"the start of the financial year {YEARS_BACK} years back"
        ahead = settings.get("post_ahead") or "year-end"
        if ahead == "year-end":
            latest, late_why = financial_year(today)[1], f"the end of the current financial year {year_label(today)}"
        else:
            latest, late_why = today + dt.timedelta(days=int(ahead)), f"{int(ahead)} days after today"
        return cls(earliest, latest, early_why, late_why)

    def check(self, day: dt.date) -> None:
        """Refuse a date outside the window, saying which bound and how to change it."""
        if self.locked_until is not None and day <= self.locked_until:
            raise RuleViolation(locked_message(f"date {day} is", self.locked_until))
        if day < self.earliest:
            raise RuleViolation(f"date {day} is before {self.earliest}, {self.earliest_why}; if it is right, "
                                "change it with 'p2psync settings --books-begin DATE'")
        if day > self.latest:
            raise RuleViolation(f"date {day} is after {self.latest}, {self.latest_why}; if it is right, "
                                "change it with 'p2psync settings --post-ahead DAYS'")


#: Who can lift the period lock, for every refusal of it where a voucher is entered.
UNLOCK_HINT = "only the head office can unlock them ('p2psync settings --lock-until')"


def locked_message(what: str, lock: dt.date) -> str:
    """The one line saying a change falls in the locked period, and who can change that."""
    return f"{what} in the books locked up to {lock}; {UNLOCK_HINT}"


def check_post_ahead(text: str) -> str:
    """'year-end' or a whole number of days (0 to about ten years)."""
    value = text.strip().lower()
    if value == "year-end":
        return value
    if value.isdigit() and int(value) <= MAX_DAYS_AHEAD:
        return str(int(value))
    raise InvalidInput(f"post-ahead {text!r} must be 'year-end' or a number of days from 0 to {MAX_DAYS_AHEAD}")


def check_negative_cash(text: str) -> str:
    value = text.strip().lower()
    if value not in ("warn", "refuse"):
        raise InvalidInput(f"negative-cash {text!r} must be warn or refuse")
    return value
