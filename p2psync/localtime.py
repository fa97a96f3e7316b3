"""Times and dates as the office reads them: its own clock's zone, its own way of writing a date.

Everything is stored and exchanged in UTC, ISO with the zone (and ``--json`` prints that); people
see the computer's local time (in India, IST) and dates written as the office chose
(``p2psync settings --date-format``), dd-mm-yyyy unless told otherwise.
"""

from __future__ import annotations

import datetime as dt

from p2psync.errors import InvalidInput

DEFAULT_DATE_FORMAT = "dd-mm-yyyy"
#: The ways of writing a date an office may choose, and their strftime patterns.
DATE_FORMATS = {"dd-mm-yyyy": "%d-%m-%Y", "dd/mm/yyyy": "%d/%m/%Y", "dd.mm.yyyy": "%d.%m.%Y",
                "yyyy-mm-dd": "%Y-%m-%d", "mm/dd/yyyy": "%m/%d/%Y"}


def check_date_format(name: str) -> str:
    """The date format `name`, refused in one line if it is not one of `DATE_FORMATS`."""
    key = name.strip().lower()
    if key not in DATE_FORMATS:
        raise InvalidInput(f"date format {name!r} is not one of {', '.join(DATE_FORMATS)}")
    return key


def _pattern(date_format: str | None) -> str:
    return DATE_FORMATS.get((date_format or "").lower(), DATE_FORMATS[DEFAULT_DATE_FORMAT])


def local_date(value: dt.date | str, date_format: str | None = None) -> str:
    """A date (or an ISO date text) written the office's way; text that is not a date is left as is."""
    if isinstance(value, str):
        try:
            value = dt.date.fromisoformat(value[:10])
        except ValueError:
            return value
    return value.strftime(_pattern(date_format))


def local_time(stamp: str | None, date_format: str | None = None, *, seconds: bool = True) -> str:
    """An ISO UTC timestamp (as stored) in this computer's local time, the date the office's way:
    "2026-04-01T20:15:00Z" is "02-04-2026 01:45:00" in India. Empty stays empty."""
    if not stamp:
        return ""
    try:
        moment = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    local = moment.astimezone()
    return local.strftime(f"{_pattern(date_format)} %H:%M{':%S' if seconds else ''}")


def zone_name() -> str:
    """The local zone's abbreviation (IST in India), for column headings."""
    return dt.datetime.now().astimezone().strftime("%Z") or "local"
