"""IMAP date and date-time text."""

from __future__ import annotations

import datetime as dt

import pytest

from mailtui.access.imap.dates import (
    format_date_time,
    parse_date,
    parse_date_time,
    sent_date,
)


def test_dates():
    assert parse_date("1-Feb-1994") == dt.date(1994, 2, 1)
    assert parse_date("01-feb-1994") == dt.date(1994, 2, 1)
    when = parse_date_time("17-Jul-1996 02:44:25 -0700")
    assert when == dt.datetime(1996, 7, 17, 9, 44, 25, tzinfo=dt.UTC)
    assert format_date_time(when) == "17-Jul-1996 02:44:25 -0700"
    assert parse_date_time(" 7-Jul-1996 02:44:25 +0530").utcoffset() == dt.timedelta(hours=5, minutes=30)
    assert format_date_time(dt.datetime(2024, 3, 5, 1, 2, 3)) == "05-Mar-2024 01:02:03 +0000"


@pytest.mark.parametrize("text", ["31-Feb-2000", "1-Foo-2000", "1-Feb-94", "", "1-Feb-1994 "])
def test_bad_dates(text):
    with pytest.raises(ValueError):
        parse_date(text)


@pytest.mark.parametrize("text", ["17-Jul-1996 02:44:25", "17-Jul-1996 2:44:25 -0700", "17-Jul-1996 02:44:25 -0760",
                                  "17-Jul-1996 25:44:25 -0700"])
def test_bad_date_times(text):
    with pytest.raises(ValueError):
        parse_date_time(text)


@pytest.mark.parametrize("header, expected", [
    (b"Sun, 31 Dec 2023 23:30:00 -0500", dt.date(2023, 12, 31)),    # the zone is ignored
    (b"1 Feb 1994 10:00 +0000", dt.date(1994, 2, 1)),
    (b"garbage", None), (b"", None), (None, None), (b"31 Feb 2000 10:00:00 +0000", None),
])
def test_sent_date(header, expected):
    assert sent_date(header) == expected
