"""mailtui's IMAP server beside Dovecot over the wire: the same Maildir, the same answers.

Both servers get the sample messages (imap_samples) in INBOX; the same
requests go to both through imaplib. FETCH data is compared as parsed
values, messages matched by their bytes (file order may differ). BODY and
BODYSTRUCTURE are case-folded where the oracle test explains why. SEARCH
results are compared as sets of messages, and a few command transcripts
(FLAGS after STORE, UID FETCH of a UID that is not there, COPYUID) by shape.

Two differences are deliberate and left out of the SEARCH list: without a
usable Date: header, SENT* keys use the internal date (as RFC 5256 does for
SORT; Dovecot uses 1970), and BODY also searches the header of an
encapsulated message/rfc822 (it is that part's body; Dovecot skips it).
"""

from __future__ import annotations

import imaplib

import imap_samples
import pytest
from harness import PASSWORD, RunningServer, make_config
from imap_dovecot import dovecot_binary, running_dovecot
from imap_wire import fetch_items, from_imaplib
from test_imap_dovecot_oracle import _normalise_body

pytestmark = pytest.mark.skipif(dovecot_binary() is None, reason="dovecot is not installed")
MESSAGES = list(imap_samples.ALL.values())
ALICE = "alice@localhost"
REQUEST = ("(ENVELOPE BODYSTRUCTURE BODY RFC822.SIZE BODY.PEEK[] BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)] "
           "BODY.PEEK[1] BODY.PEEK[2.MIME] BODY.PEEK[TEXT]<0.40>)")
SEARCHES = ['SUBJECT "multipart"', "LARGER 600", "SMALLER 300", 'FROM "example"', 'TO "bob"',
            'TEXT "part"', 'BODY "second"', 'HEADER Content-Type "multipart/mixed"', "NOT SMALLER 300",
            'OR SUBJECT "plain" SUBJECT "nested"', "UNDELETED", 'SENTBEFORE 1-Jan-2030',
            'CHARSET UTF-8 BODY "original"']


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    ours = RunningServer(make_config(tmp_path_factory.mktemp("ours") / "data")).start()
    try:
        ours.add_mailbox(ALICE)
        for data in MESSAGES:
            ours.call(ours.core.maildirs.deliver_sync, ALICE, data)
        with running_dovecot(MESSAGES) as dovecot:
            mine = imaplib.IMAP4("127.0.0.1", ours.imap_port, timeout=10)
            mine.login(ALICE, PASSWORD)
            theirs = dovecot.connect()
            try:
                yield mine, theirs
            finally:
                for client in (mine, theirs):
                    try:
                        client.logout()
                    except imaplib.IMAP4.error:
                        pass
    finally:
        ours.stop()


def by_message(client: imaplib.IMAP4) -> dict[bytes, dict]:
    status, data = client.fetch("1:*", REQUEST)
    assert status == "OK", data
    answers = {}
    for response in from_imaplib(data):
        items = fetch_items(response)[1]
        answers[items["BODY[]"]] = items
    return answers


def test_fetch_answers_match_dovecot(both):
    mine, theirs = both
    for client in both:
        client.select("INBOX", readonly=True)
    ours, dovecots = by_message(mine), by_message(theirs)
    assert set(ours) == set(dovecots) and len(ours) == len(MESSAGES)
    for raw, their_items in dovecots.items():
        our_items = ours[raw]
        for key in ("BODY", "BODYSTRUCTURE"):
            their_items[key], our_items[key] = _normalise_body(their_items[key]), _normalise_body(our_items[key])
        assert our_items == their_items


def _numbers_to_messages(client: imaplib.IMAP4, numbers: bytes) -> set[bytes]:
    found = set()
    for n in numbers.split():
        status, data = client.fetch(n.decode(), "(BODY.PEEK[])")
        found.add(data[0][1])
    return found


@pytest.mark.parametrize("criteria", SEARCHES)
def test_search_finds_what_dovecot_finds(both, criteria):
    results = []
    for client in both:
        client.select("INBOX", readonly=True)
        status, data = client.search(None, criteria)
        assert status == "OK", (criteria, data)
        results.append(_numbers_to_messages(client, data[0]))
    assert results[0] == results[1], criteria


def test_store_copy_and_missing_uid_transcripts(both):
    shapes = []
    for client in both:
        client.select("INBOX")
        store = client.store("1", "+FLAGS", "(\\Flagged $Later)")[1][0]
        silent = client.store("1", "-FLAGS.SILENT", "($Later)")
        missing = client.uid("FETCH", "999999", "(FLAGS)")
        client.create("Archive")
        copy = client.copy("1:2", "Archive")[1][0]
        shapes.append((store.replace(b" \\Recent", b""), silent, missing,
                       copy.split(b" ")[0], copy.split(b" ")[2:4]))
        client.delete("Archive")
    assert shapes[0] == shapes[1]


@pytest.mark.parametrize("command", ["UID SEARCH RETURN (MIN MAX COUNT) LARGER 100",
                                     "SEARCH RETURN () SMALLER 1", "SEARCH RETURN (COUNT ALL) ALL",
                                     "UID SEARCH RETURN (ALL) UNDELETED"])
def test_esearch_answers_like_dovecot(both, command):
    answers = []
    for client in both:
        client.select("INBOX", readonly=True)
        typ, data = client._simple_command(*command.split(" ", 1))
        assert typ == "OK", data
        answers.append(client.untagged_responses.pop("ESEARCH", [None])[0])
    mine, theirs = (a.split(b")", 1)[1] if a else a for a in answers)
    assert mine == theirs
