"""The command grammar: tables of good and bad commands, framing, and hostile input."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtui.access.imap import commands as c
from mailtui.access.imap.errors import ParseError
from mailtui.access.imap.fetchspec import FetchAttribute, Partial, Section
from mailtui.access.imap.literals import (
    CommandAssembler,
    Limits,
    LiteralInfo,
    LiteralRefused,
    literal_at_end,
    tag_of,
)
from mailtui.access.imap.parser import parse_command
from mailtui.access.imap.searchkeys import (
    All,
    And,
    Body,
    DateKey,
    HasFlag,
    Header,
    Not,
    Or,
    Sequence,
    Size,
    Text,
)
from mailtui.access.imap.sequence import SequenceSet


def parse(*pieces: bytes) -> c.Command:
    return parse_command(list(pieces))


def seq(text: str) -> SequenceSet:
    return SequenceSet.parse(text)


GOOD = [
    (b"a1 CAPABILITY", c.Capability("a1")),
    (b"a1 noop", c.Noop("a1")),
    (b"A.2 LOGOUT", c.Logout("A.2")),
    (b"t STARTTLS", c.StartTls("t")),
    (b"t IDLE", c.Idle("t")),
    (b"t NAMESPACE", c.Namespace("t")),
    (b"t CHECK", c.Check("t")),
    (b"t CLOSE", c.Close("t")),
    (b"t UNSELECT", c.Unselect("t")),
    (b"t EXPUNGE", c.Expunge("t")),
    (b"t UID EXPUNGE 3:5,9", c.Expunge("t", seq("3:5,9"))),
    (b'a LOGIN fred "sec ret"', c.Login("a", "fred", "sec ret")),
    (b'a LOGIN "fr\\"ed" "\\\\"', c.Login("a", 'fr"ed', "\\")),
    (b"a AUTHENTICATE plain", c.Authenticate("a", "PLAIN", None)),
    (b"a AUTHENTICATE PLAIN =", c.Authenticate("a", "PLAIN", b"")),
    (b"a AUTHENTICATE PLAIN AGZyZWQAcA==", c.Authenticate("a", "PLAIN", b"\x00fred\x00p")),
    (b"a SELECT inbox", c.Select("a", "INBOX")),
    (b"a SELECT Inbox (CONDSTORE)", c.Select("a", "INBOX", True)),
    (b'a EXAMINE "Sent"', c.Examine("a", "Sent")),
    (b"a EXAMINE INBOX.Sent", c.Examine("a", "INBOX.Sent")),
    (b"a CREATE ~peter/mail/&U,BTFw-", c.Create("a", "~peter/mail/&U,BTFw-")),
    (b"a DELETE foo", c.Delete("a", "foo")),
    (b"a RENAME foo bar", c.Rename("a", "foo", "bar")),
    (b"a SUBSCRIBE foo", c.Subscribe("a", "foo")),
    (b"a UNSUBSCRIBE foo", c.Unsubscribe("a", "foo")),
    (b'a LIST "" *', c.List("a", "", ("*",))),
    (b'a LIST "" %/x*', c.List("a", "", ("%/x*",))),
    (b'a LIST (SPECIAL-USE) "" "*"', c.List("a", "", ("*",), frozenset({"SPECIAL-USE"}))),
    (b'a LIST "" * RETURN (SPECIAL-USE)', c.List("a", "", ("*",), returns=frozenset({"SPECIAL-USE"}))),
    (b'a LIST "" (INBOX "Sent*") RETURN (CHILDREN STATUS (MESSAGES UNSEEN))',
     c.List("a", "", ("INBOX", "Sent*"), returns=frozenset({"CHILDREN", "STATUS"}),
            status_items=("MESSAGES", "UNSEEN"))),
    (b'a LSUB "#news." comp.%', c.Lsub("a", "#news.", "comp.%")),
    (b"a STATUS inbox (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)",
     c.Status("a", "INBOX", ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN"))),
    (b"a ENABLE CONDSTORE utf8=accept", c.Enable("a", ("CONDSTORE", "UTF8=ACCEPT"))),
    (b"a ID NIL", c.Id("a", None)),
    (b'a ID ("name" "sodr" "version" NIL)', c.Id("a", (("name", "sodr"), ("version", None)))),
    (b"a ID ()", c.Id("a", ())),
    (b"a COPY 2:4 MEETING", c.Copy("a", seq("2:4"), "MEETING")),
    (b"a UID MOVE 4827313:4828442 Trash", c.Move("a", seq("4827313:4828442"), "Trash", True)),
    (b"a STORE 2:4 +FLAGS (\\Deleted)", c.Store("a", seq("2:4"), "add", False, ("\\Deleted",))),
    (b"a STORE 1 -flags.silent \\seen $Junk", c.Store("a", seq("1"), "remove", True, ("\\Seen", "$Junk"))),
    (b"a UID STORE * FLAGS ()", c.Store("a", seq("*"), "replace", False, (), True)),
    (b"a FETCH 1 UID", c.Fetch("a", seq("1"), (FetchAttribute("UID"),))),
    (b"a FETCH *:3 fast", c.Fetch("a", seq("*:3"), tuple(FetchAttribute(n) for n in
                                                          ("FLAGS", "INTERNALDATE", "RFC822.SIZE")))),
    (b"a UID FETCH 1:* (FLAGS)", c.Fetch("a", seq("1:*"), (FetchAttribute("UID"), FetchAttribute("FLAGS")), True)),
    (b"a FETCH 1 (BODY[])", c.Fetch("a", seq("1"), (FetchAttribute("BODY[]", Section()),))),
    (b"a FETCH 1 BODY.PEEK[1.2.MIME]<0.100>",
     c.Fetch("a", seq("1"), (FetchAttribute("BODY[]", Section((1, 2), "MIME"), Partial(0, 100), True),))),
    (b"a FETCH 1 (body[header.fields (Subject \"X-Y\")])",
     c.Fetch("a", seq("1"), (FetchAttribute("BODY[]", Section((), "HEADER.FIELDS", ("Subject", "X-Y"))),))),
    (b"a FETCH 1 (BODY[2.HEADER.FIELDS.NOT (A)] BODY[TEXT] RFC822.HEADER BODYSTRUCTURE)",
     c.Fetch("a", seq("1"), (FetchAttribute("BODY[]", Section((2,), "HEADER.FIELDS.NOT", ("A",))),
                             FetchAttribute("BODY[]", Section((), "TEXT")),
                             FetchAttribute("RFC822.HEADER"), FetchAttribute("BODYSTRUCTURE")))),
]


@pytest.mark.parametrize("line, expected", GOOD, ids=[g[0].decode() for g in GOOD])
def test_good_commands(line, expected):
    assert parse(line) == expected


def test_literals_are_spliced_between_lines():
    command = parse(b"a LOGIN {4}", b"fr d", b" {3+}", b"p\xc3\xa4", b"")
    assert command == c.Login("a", "fr d", "pä")


def test_append_with_flags_and_date():
    command = parse(b'a APPEND saved-messages (\\Seen) "17-Jul-1996 02:44:25 -0700" {5}', b"hi\r\n!", b"")
    zone = dt.timezone(-dt.timedelta(hours=7))
    assert command == c.Append("a", "saved-messages", ("\\Seen",), dt.datetime(1996, 7, 17, 2, 44, 25, tzinfo=zone),
                               b"hi\r\n!")
    assert parse(b"a APPEND INBOX {1}", b"x", b"") == c.Append("a", "INBOX", (), None, b"x")


SEARCHES = [
    (b"ALL", All()),
    (b"UNSEEN", Not(HasFlag("\\Seen"))),
    (b"NEW", And((HasFlag("\\Recent"), Not(HasFlag("\\Seen"))))),
    (b"OLD", Not(HasFlag("\\Recent"))),
    (b"KEYWORD $Junk UNKEYWORD foo", And((HasFlag("$Junk"), Not(HasFlag("foo"))))),
    (b'FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"',
     And((HasFlag("\\Flagged"), DateKey("since", dt.date(1994, 2, 1), False), Not(Header("From", "Smith"))))),
    (b'SENTBEFORE "01-Jan-2000" SENTON 2-Jan-2000 ON 3-Mar-2001',
     And((DateKey("before", dt.date(2000, 1, 1), True), DateKey("on", dt.date(2000, 1, 2), True),
          DateKey("on", dt.date(2001, 3, 3), False)))),
    (b"OR LARGER 10 SMALLER 5", Or(Size("larger", 10), Size("smaller", 5))),
    (b"1:3,* UID 5:*", And((Sequence(SequenceSet.parse("1:3,*"), False), Sequence(SequenceSet.parse("5:*"), True)))),
    (b"(DELETED (DRAFT))", And((HasFlag("\\Deleted"), HasFlag("\\Draft")))),
    (b'HEADER X-Spam "" BODY x TEXT {3}\r\n', None),  # literal: replaced below
    (b"TO a CC b BCC c SUBJECT d", And((Header("To", "a"), Header("Cc", "b"), Header("Bcc", "c"),
                                        Header("Subject", "d")))),
    (b'BODY "caf\xc3\xa9"', Body("café")),
]


@pytest.mark.parametrize("keys, expected", [s for s in SEARCHES if s[1] is not None])
def test_search_keys(keys, expected):
    command = parse(b"s SEARCH " + keys)
    assert command.program.key == expected


def test_search_with_literal_charset_and_return():
    command = parse(b'a UID SEARCH RETURN (MIN COUNT) CHARSET utf-8 HEADER X-Spam "" TEXT {2}', b"\xc3\xa9", b"")
    assert command.uid
    assert command.program.charset == "UTF-8"
    assert command.program.return_options == ("MIN", "COUNT")
    assert command.program.key == And((Header("X-Spam", ""), Text("é")))
    assert parse(b"a SEARCH RETURN () ALL").program.return_options == ()


def test_other_charsets_are_refused_with_badcharset():
    with pytest.raises(ParseError) as caught:
        parse(b"a SEARCH CHARSET KOI8-R TEXT x")
    assert caught.value.response() == b"a NO [BADCHARSET (UTF-8 US-ASCII)] Unsupported charset\r\n"


BAD = [
    b"a", b"a ", b"", b"   ", b"* NOOP", b"+ NOOP", b"a FROB", b"a NOOP extra", b"a  NOOP",
    b"a UID NOOP", b"a LOGIN fred", b"a LOGIN fred \"unterminated", b"a LOGIN \"\xff\" x",
    b"a SELECT", b"a SELECT INBOX (QRESYNC)", b"a SELECT \"sent\xc3\xa9\"",
    b"a FETCH 0 FLAGS", b"a FETCH 4294967296 FLAGS", b"a FETCH 1:0 FLAGS", b"a FETCH 01 FLAGS",
    b"a FETCH 1", b"a FETCH 1 (FLAGS", b"a FETCH 1 ()", b"a FETCH 1 BODY[0]", b"a FETCH 1 BODY[1.]",
    b"a FETCH 1 BODY[MIME]", b"a FETCH 1 BODY[HEADER.FIELDS]", b"a FETCH 1 BODY[HEADER.FIELDS ()]",
    b"a FETCH 1 BODY[TEXT]<0.0>", b"a FETCH 1 BODY[TEXT]<1>", b"a FETCH 1 BODY[FOO]", b"a FETCH 1 RFC822[]",
    b"a FETCH 1 FLAGS.PEEK", b"a FETCH 1 (ALL)", b"a FETCH 1,,2 FLAGS", b"a FETCH $ FLAGS",
    b"a STORE 1 FLAGS (\\Recent)", b"a STORE 1 FLAGS (\\Foo)", b"a STORE 1 XFLAGS (\\Seen)",
    b"a STORE 1 +FLAGS", b"a COPY 1", b"a SEARCH", b"a SEARCH FOO", b"a SEARCH SINCE 31-Feb-2000",
    b"a SEARCH SINCE 1-Foo-2000", b"a SEARCH OR ALL", b"a SEARCH (ALL", b"a SEARCH LARGER x",
    b"a SEARCH RETURN (FOO) ALL", b"a STATUS INBOX (MESSAGES FOO)", b"a STATUS INBOX ()",
    b"a LIST (FOO) \"\" *", b"a LIST \"\" * RETURN (FOO)", b"a LIST \"\"", b"a APPEND INBOX",
    b"a APPEND INBOX \"junk\" {1}", b"a APPEND INBOX (\\Recent) {1}", b"a ENABLE", b"a ID",
    b"a ID (\"name\")", b"a ID (NIL \"x\")", b"a AUTHENTICATE PLAIN !!!", b"a AUTHENTICATE PLAIN AGZ",
    b"a NOOP\x00", b"a\x00 NOOP", b"a UID EXPUNGE", b"a RENAME a",
    b"a SEARCH " + b"(" * 17 + b"ALL" + b")" * 17, b"a SEARCH " + b"NOT " * 70 + b"ALL",
    b"a ID " + b"(" * 20,
]


@pytest.mark.parametrize("line", BAD, ids=[repr(b)[2:40] for b in BAD])
def test_bad_commands(line):
    with pytest.raises(ParseError) as caught:
        parse(*([line, b"x", b""] if line.endswith(b"{1}") else [line]))
    assert caught.value.status == "BAD"
    assert caught.value.response().endswith(b"\r\n")
    assert b"\r" not in caught.value.response()[:-2] and b"\x00" not in caught.value.response()


def test_bad_carries_the_tag():
    with pytest.raises(ParseError) as caught:
        parse(b"x17 FETCH 0 FLAGS")
    assert caught.value.tag == "x17"
    assert caught.value.response().startswith(b"x17 BAD ")
    with pytest.raises(ParseError) as caught:
        parse(b"(bad NOOP")
    assert caught.value.response().startswith(b"* BAD ")


def test_nul_in_a_literal_is_bad():
    with pytest.raises(ParseError):
        parse(b"a LOGIN {3}", b"a\x00b", b" x")


def test_literal_size_must_match():
    with pytest.raises(ParseError):
        parse(b"a LOGIN {4}", b"abc", b" x")


def test_nesting_limit_is_16():
    ok = b"a SEARCH " + b"(" * 16 + b"ALL" + b")" * 16
    assert parse(ok).program.key == All()


# -- framing -------------------------------------------------------------------------
@pytest.mark.parametrize("line, expected", [
    (b"a LOGIN {5}", LiteralInfo(5, True)),
    (b"a APPEND x {12345+}", LiteralInfo(12345, False)),
    (b'a LOGIN "{5}"', None),
    (b'a LOGIN "x\\" {5}', None),        # the quote is still open
    (b'a LOGIN "x\\\\" {5}', LiteralInfo(5, True)),
    (b"a NOOP", None),
    (b"a LOGIN {5} x", None),
    (b"a LOGIN {-5}", None),
    (b"{0}", LiteralInfo(0, True)),
])
def test_literal_at_end(line, expected):
    assert literal_at_end(line) == expected


def test_tag_of():
    assert tag_of(b"a1 NOOP") == "a1"
    assert tag_of(b"a1") == "a1"
    assert tag_of(b"(x NOOP") == "*"
    assert tag_of(b"") == "*"


def test_assembler_collects_a_command_and_enforces_limits():
    asm = CommandAssembler(Limits(max_literal=10, max_literals=2))
    assert asm.feed_line(b"a LOGIN {3}") == LiteralInfo(3, True)
    asm.feed_literal(b"bob")
    assert asm.feed_line(b" {4+}") == LiteralInfo(4, False)
    asm.feed_literal(b"pass")
    assert asm.feed_line(b"") is None
    assert parse_command(asm.take()) == c.Login("a", "bob", "pass")

    with pytest.raises(LiteralRefused) as too_big:
        asm.feed_line(b"b APPEND INBOX {11}")
    assert too_big.value.tag == "b" and not too_big.value.must_drain
    assert too_big.value.response().startswith(b"b NO ")
    asm.take()
    with pytest.raises(LiteralRefused) as plus:
        asm.feed_line(b"c APPEND INBOX {11+}")
    assert plus.value.must_drain
    asm.take()
    asm.feed_line(b"d SEARCH TEXT {1}")
    asm.feed_literal(b"x")
    asm.feed_line(b" TEXT {1}")
    asm.feed_literal(b"y")
    with pytest.raises(LiteralRefused, match="Too many"):
        asm.feed_line(b" TEXT {1}")


# -- hostile input -----------------------------------------------------------------------
WORDS = [b"a1", b" ", b"(", b")", b"[", b"]", b"<", b">", b".", b"\"", b"\\", b"{3}", b"{2+}", b"*", b"%",
         b"1", b"0", b":", b",", b"NIL", b"UID", b"FETCH", b"SEARCH", b"STORE", b"LIST", b"APPEND", b"BODY",
         b"BODY.PEEK", b"HEADER.FIELDS", b"NOT", b"OR", b"CHARSET", b"RETURN", b"FLAGS", b"+FLAGS",
         b"\\Seen", b"INBOX", b"LOGIN", b"ID", b"STATUS", b"MESSAGES", b"SELECT", b"\xff", b"\x00", b"\r"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=5))
def test_random_bytes_only_raise_parse_error(pieces):
    if len(pieces) % 2 == 0:
        pieces.append(b"")
    try:
        result = parse_command(pieces)
    except ParseError as exc:
        assert exc.response().endswith(b"\r\n")
    else:
        assert isinstance(result, c.Command)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=25), st.sampled_from([b"a1 ", b"t UID ", b"x "]))
def test_random_token_soup_only_raises_parse_error(words, prefix):
    line = prefix + b"".join(words)
    pieces = [line]
    info = literal_at_end(line)
    if info is not None and info.size < 100:
        pieces += [b"x" * info.size, b""]
    try:
        parse_command(pieces)
    except ParseError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.sampled_from([b"ALL", b"SEEN", b"1:*", b'FROM "x"', b"LARGER 5", b"UID 2"]),
                    lambda inner: st.one_of(
                        inner.map(lambda k: b"NOT " + k),
                        st.tuples(inner, inner).map(lambda p: b"OR " + p[0] + b" " + p[1]),
                        st.lists(inner, min_size=1, max_size=3).map(lambda ks: b"(" + b" ".join(ks) + b")")),
                    max_leaves=30))
def test_generated_search_programs_parse_or_fail_cleanly(program):
    try:
        command = parse_command([b"a SEARCH " + program])
    except ParseError as exc:
        assert "nested" in exc.text.lower()
    else:
        assert isinstance(command, c.Search)
