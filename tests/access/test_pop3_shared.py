"""POP3 and IMAP on one INBOX, over real sockets to a real Core: one set of UIDs, one truth.

poplib and imaplib drive the server the way scripted clients do; every read
has a timeout. POP3's UIDL is IMAP's (UIDVALIDITY, UID), a change either
protocol makes is seen by the other at once, and neither protocol's
sessions wait for the other's.
"""

from __future__ import annotations

import imaplib
import poplib
import re
import time

import pytest
from harness import PASSWORD, RunningServer, make_config

pytestmark = pytest.mark.timeout(60)
ALICE = "alice@localhost"
TIMEOUT = 5


def deliver(server: RunningServer, *subjects: str) -> None:
    for subject in subjects:
        server.call(server.core.maildirs.deliver_sync, ALICE, f"Subject: {subject}\r\n\r\n{subject}\r\n".encode())


def pop3(server: RunningServer) -> poplib.POP3:
    client = poplib.POP3("127.0.0.1", server.pop3_port, timeout=TIMEOUT)
    client.user(ALICE)
    client.pass_(PASSWORD)
    return client


def imap(server: RunningServer) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=TIMEOUT)
    client.login(ALICE, PASSWORD)
    client.select("INBOX")
    return client


def uidls(client: poplib.POP3) -> dict[int, str]:
    return {int(n): uid.decode() for n, uid in (line.split() for line in client.uidl()[1])}


def subject_of(lines: list[bytes]) -> str:
    return next(line for line in lines if line.startswith(b"Subject: "))[9:].decode()


def imap_uids(client: imaplib.IMAP4) -> tuple[int, dict[int, str]]:
    """UIDVALIDITY and UID -> subject, as IMAP tells them."""
    client.noop()
    validity = int(client.status("INBOX", "(UIDVALIDITY)")[1][0].split()[-1].rstrip(b")"))
    found = {}
    for item in client.uid("FETCH", "1:*", "(UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1]:
        if isinstance(item, tuple):
            found[int(re.search(rb"UID (\d+)", item[0])[1])] = subject_of(item[1].split(b"\r\n"))
    return validity, found


def flags(client: imaplib.IMAP4) -> dict[int, set[bytes]]:
    """UID -> flags, without \\Recent (which only says who looked first)."""
    rows = client.uid("FETCH", "1:*", "(UID FLAGS)")[1]
    return {int(re.search(rb"UID (\d+)", r)[1]): set(re.search(rb"FLAGS \(([^)]*)\)", r)[1].split()) - {b"\\Recent"}
            for r in rows}


@pytest.fixture
def alice(server):
    server.add_mailbox(ALICE)
    return server


def test_uidl_names_the_message_imap_names_with_that_uid(alice):
    deliver(alice, "one", "two", "three")
    box = imap(alice)
    box.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
    box.expunge()                      # so POP3's numbers and IMAP's UIDs differ
    deliver(alice, "four")
    validity, by_uid = imap_uids(box)
    assert sorted(by_uid) == [2, 3, 4]
    client = pop3(alice)
    try:
        listing = uidls(client)
        assert len(listing) == 3
        for number, uidl in listing.items():
            uid = int(uidl[:8], 16)
            assert uidl == f"{uid:08x}{validity:08x}"
            assert subject_of(client.top(number, 0)[1]) == by_uid[uid]
    finally:
        client.quit()
        box.logout()


def test_a_restart_keeps_every_uidl_and_new_mail_gets_new_ones(tmp_path):
    config = make_config(tmp_path / "data")
    first = RunningServer(config).start()
    try:
        first.add_mailbox(ALICE)
        deliver(first, "one", "two", "three")
        client = pop3(first)
        before = uidls(client)
        client.quit()
        box = imap(first)
        box.uid("STORE", "2", "+FLAGS", "(\\Flagged $Work)")      # renames the file
        box.logout()
    finally:
        first.stop()
    second = RunningServer(config).start()
    try:
        client = pop3(second)
        assert uidls(client) == before
        client.quit()
        deliver(second, "four")
        client = pop3(second)
        after = uidls(client)
        client.quit()
    finally:
        second.stop()
    assert {n: after[n] for n in before} == before
    assert after[4] not in before.values() and int(after[4][:8], 16) == 4


def test_an_imap_flag_change_does_not_hide_a_message_from_pop3(alice):
    deliver(alice, "one", "two")
    client = pop3(alice)               # the snapshot is taken here
    box = imap(alice)
    try:
        box.uid("STORE", "1:*", "+FLAGS", "(\\Flagged $Later)")
        assert subject_of(client.retr(1)[1]) == "one"
        assert subject_of(client.top(2, 0)[1]) == "two"
        client.quit()
        assert flags(box) == {1: {b"\\Flagged", b"$Later", b"\\Seen"}, 2: {b"\\Flagged", b"$Later"}}
    finally:
        box.logout()


def test_a_message_imap_expunged_is_still_listed_and_its_retr_fails(alice):
    deliver(alice, "one", "two", "three")
    client = pop3(alice)
    box = imap(alice)
    try:
        box.uid("STORE", "2", "+FLAGS", "(\\Deleted)")
        box.expunge()
        assert len(client.list()[1]) == 3                     # RFC 1939: the maildrop as it was at login
        with pytest.raises(poplib.error_proto, match="-ERR Message 2 expunged."):
            client.retr(2)
        assert subject_of(client.retr(3)[1]) == "three"
        client.dele(2)
        assert client.quit() == b"+OK mail.test POP3 server signing off (2 messages left)"
        assert imap_uids(box)[1] == {1: "one", 3: "three"}
    finally:
        box.logout()


def test_pop3_deletion_reaches_imap_in_idle_within_a_second(alice):
    deliver(alice, "one", "two")
    idler, watcher = imap(alice), imap(alice)
    try:
        idler.send(b"i1 IDLE\r\n")
        assert idler.readline() == b"+ idling\r\n"
        client = pop3(alice)
        client.dele(1)
        client.quit()
        began = time.monotonic()
        assert idler.readline() == b"* 1 EXPUNGE\r\n"
        assert time.monotonic() - began < 1
        idler.send(b"DONE\r\n")
        assert idler.readline().startswith(b"i1 OK")
        watcher.noop()
        assert watcher.response("EXPUNGE") == ("EXPUNGE", [b"1"])
        assert imap_uids(watcher)[1] == {2: "two"}
    finally:
        idler.logout()
        watcher.logout()


def test_retr_marks_seen_for_imap_and_top_does_not(alice):
    deliver(alice, "one", "two", "three")
    client = pop3(alice)
    client.retr(1)
    client.top(2, 5)
    client.quit()
    box = imap(alice)
    try:
        assert flags(box) == {1: {b"\\Seen"}, 2: set(), 3: set()}
    finally:
        box.logout()


def test_the_maildrop_lock_is_pop3s_alone(alice):
    deliver(alice, "one", "two", "three")
    holder = pop3(alice)
    try:
        box = imap(alice)                        # POP3 holds the maildrop: IMAP works on
        box.uid("STORE", "3", "+FLAGS", "(\\Deleted)")
        box.expunge()
        box.send(b"i1 IDLE\r\n")
        assert box.readline() == b"+ idling\r\n"
        with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
            pop3(alice)                          # and a second POP3 session is refused (RFC 1939 section 8)
        holder.dele(1)
        holder.quit()
        assert box.readline() == b"* 1 EXPUNGE\r\n"
        second = pop3(alice)                     # IMAP in IDLE does not keep POP3 out
        assert [subject_of(second.retr(1)[1])] == ["two"] and len(second.list()[1]) == 1
        second.quit()
        assert re.fullmatch(rb"\* 1 FETCH \(UID 2 FLAGS \(.*\\Seen.*\)\)\r\n", box.readline())
        box.send(b"DONE\r\n")
        assert box.readline().startswith(b"i1 OK")
        box.logout()
    finally:
        holder.close()
