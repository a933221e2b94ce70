"""IMAP dates: ``date`` for SEARCH, ``date-time`` for APPEND and INTERNALDATE (RFC 3501 §9)."""

from __future__ import annotations

import datetime as dt
import email.utils
import re

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name.lower(): number for number, name in enumerate(MONTHS, 1)}
_DATE = re.compile(r"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(r"([ 0-9][0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})")


def parse_date(text: str) -> dt.date:
    """``1-Feb-1994`` (or ``01-Feb-1994``) → date; ValueError if malformed."""
    found = _DATE.fullmatch(text)
    if not found or found.group(2).lower() not in _MONTH_NUMBER:
        raise ValueError(f"not an IMAP date: {text!r}")
    day, month, year = found.groups()
    return dt.date(int(year), _MONTH_NUMBER[month.lower()], int(day))


def parse_date_time(text: str) -> dt.datetime:
    """``17-Jul-1996 02:44:25 -0700`` → aware datetime; ValueError if malformed."""
    found = _DATE_TIME.fullmatch(text)
    if not found or found.group(2).lower() not in _MONTH_NUMBER:
        raise ValueError(f"not an IMAP date-time: {text!r}")
    day, month, year, hour, minute, second, sign, zh, zm = found.groups()
    if int(zm) > 59:
        raise ValueError(f"bad zone in {text!r}")
    offset = dt.timedelta(hours=int(zh), minutes=int(zm)) * (-1 if sign == "-" else 1)
    return dt.datetime(int(year), _MONTH_NUMBER[month.lower()], int(day.strip()),
                       int(hour), int(minute), int(second), tzinfo=dt.timezone(offset))


def format_date_time(moment: dt.datetime) -> str:
    """INTERNALDATE text: ``17-Jul-1996 02:44:25 -0700`` (naive times are taken as UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    offset = moment.utcoffset() or dt.timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    zone = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return (f"{moment.day:02d}-{MONTHS[moment.month - 1]}-{moment.year:04d} "
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} {zone}")


def sent_date(header_value: bytes | None) -> dt.date | None:
    """The calendar date of a Date: header, as written (its zone ignored); None if unreadable."""
    if not header_value:
        return None
    try:
        parsed = email.utils.parsedate_tz(header_value.decode("ascii", "replace"))
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if parsed is None:
        return None
    try:
        return dt.date(parsed[0], parsed[1], parsed[2])
    except (ValueError, TypeError, OverflowError):
        return None
