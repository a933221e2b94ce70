"""The IMAP server over real loopback sockets: imaplib and scripted raw dialogues.

A real Core runs in a background loop (tests/harness.py); every read has a
timeout and every server is stopped by its fixture.
"""

from __future__ import annotations

import imaplib
import smtplib
import time

import pytest
from harness import PASSWORD, RunningServer, make_config
from imap_raw import Raw, insecure_context

from mailtui.events import AuthFailed, AuthSucceeded, ConnectionClosed, ConnectionOpened, SessionChanged

ALICE = "alice@localhost"
BOB = "bob@localhost"
MSG = b"From: Bob <bob@localhost>\r\nTo: alice@localhost\r\nSubject: hello\r\n\r\nHi Alice\r\n"


def start(tmp_path, **sections) -> RunningServer:
    srv = RunningServer(make_config(tmp_path / "data", **sections)).start()
    srv.add_mailbox(ALICE)
    srv.add_mailbox(BOB)
    return srv


@pytest.fixture
def srv(tmp_path):
    server = start(tmp_path)
    try:
        yield server
    finally:
        server.stop()


def deliver(srv: RunningServer, data: bytes = MSG, key: str = ALICE) -> None:
    srv.call(srv.core.maildirs.deliver_sync, key, data)


def client(srv: RunningServer, user: str = ALICE) -> imaplib.IMAP4:
    m = imaplib.IMAP4("127.0.0.1", srv.imap_port, timeout=5)
    m.login(user, PASSWORD)
    return m


# -- a whole session with imaplib ----------------------------------------------------
def test_select_fetch_store_search_copy_expunge(srv):
    deliver(srv)
    deliver(srv, MSG.replace(b"hello", b"second"))
    m = client(srv)
    assert m.select("INBOX") == ("OK", [b"2"])
    typ, data = m.uid("FETCH", "1:*", "(UID FLAGS RFC822.SIZE)")
    assert data == [b"1 (UID 1 FLAGS (\\Recent) RFC822.SIZE %d)" % len(MSG),
                    b"2 (UID 2 FLAGS (\\Recent) RFC822.SIZE %d)" % (len(MSG) + 1)]
    assert m.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")[1][0][1] == b"Subject: second\r\n\r\n"
    assert m.search(None, "SUBJECT", "second") == ("OK", [b"2"])
    assert m.uid("SEARCH", "UNSEEN") == ("OK", [b"1 2"])
    assert m.store("1", "+FLAGS", "(\\Deleted $Work)")[1] == [b"1 (FLAGS (\\Deleted $Work \\Recent))"]
    typ, data = m.copy("1:2", "Trash")
    assert typ == "OK" and b"[COPYUID " in data[0] and data[0].split()[2:4] == [b"1:2", b"1:2]"]
    assert m.expunge() == ("OK", [b"1"])
    assert m.uid("FETCH", "1:*", "(UID)")[1] == [b"1 (UID 2)"]
    assert m.status("Trash", "(MESSAGES UNSEEN)")[1] == [b'"Trash" (MESSAGES 2 UNSEEN 2)']
    m.logout()


def test_append_gives_appenduid_and_keeps_flags_and_date(srv):
    m = client(srv)
    when = imaplib.Time2Internaldate(1_000_000_000)
    typ, data = m.append("Drafts", "(\\Draft $Label)", when, MSG)
    assert typ == "OK" and data[0].startswith(b"[APPENDUID ")
    m.select("Drafts")
    typ, data = m.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[])")
    assert b"FLAGS (\\Draft $Label \\Recent)" in data[0][0] and b"09-Sep-2001 01:46:40 +0000" in data[0][0]
    assert data[0][1] == MSG
    assert m.append("NoSuchBox", None, None, MSG)[1][0].startswith(b"[TRYCREATE]")


def test_move_sends_copyuid_then_expunge(srv):
    deliver(srv)
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        c.cmd("s", "SELECT INBOX")
        reply = c.cmd("m", "UID MOVE 1 Junk")
        assert reply.startswith(b"* OK [COPYUID ") and b"* 1 EXPUNGE\r\n" in reply
        assert reply.endswith(b"m OK MOVE completed\r\n")


def test_list_shows_special_use_children_and_subscriptions(srv):
    m = client(srv)
    assert m.create("Work.Projects")[0] == "OK"
    typ, data = m.list()
    assert b'(\\HasChildren) "." "Work"' in data and b'(\\HasNoChildren \\Sent) "." "Sent"' in data
    typ, data = m.list('""', "%")
    assert b'(\\HasNoChildren) "." "Work.Projects"' not in data
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        reply = c.cmd("a", 'LIST (SPECIAL-USE) "" "*" RETURN (SUBSCRIBED)')
        assert reply.count(b"* LIST") == 4 and b"\\Subscribed" in reply and b"Work" not in reply
        reply = c.cmd("b", 'LIST "" "*" RETURN (STATUS (MESSAGES))')
        assert b'* STATUS "Sent" (MESSAGES 0)' in reply
        assert c.cmd("c", 'LIST "" ""') == b'* LIST (\\Noselect) "." ""\r\nc OK LIST completed\r\n'
        assert b'* LSUB () "." "Sent"' in c.cmd("d", 'LSUB "" "*"')


def test_rename_and_delete(srv):
    m = client(srv)
    m.create("Old.Child")
    assert m.rename("Old", "New")[0] == "OK"
    names = b"".join(m.list()[1])
    assert b'"New.Child"' in names and b'"Old' not in names
    assert m.delete("New")[0] == "NO"          # has children
    assert m.delete("New.Child")[0] == "OK" and m.delete("New")[0] == "OK"
    assert m.delete("INBOX")[0] == "NO"


def test_rename_inbox_moves_its_messages_and_leaves_it_empty(srv):
    deliver(srv)
    deliver(srv)
    m = client(srv)
    assert m.rename("INBOX", "Old-mail")[0] == "OK"
    assert m.select("INBOX") == ("OK", [b"0"])
    assert m.select("Old-mail") == ("OK", [b"2"])


@pytest.mark.parametrize("name", ["../bob", "..", "~bob", "/etc", "#users.bob", "#shared", "a..b", "Trash/../..",
                                  "&Jjo", "INBOX/../../bob@localhost"])
def test_path_tricks_in_mailbox_names_get_no(srv, name):
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        for tag, command in (("c", "CREATE"), ("s", "SELECT"), ("t", "STATUS")):
            extra = " (MESSAGES)" if command == "STATUS" else ""
            reply = c.cmd(tag, f'{command} "{name}"{extra}')
            assert reply.splitlines()[-1].startswith(f"{tag} NO".encode()), (command, reply)
        reply = c.cmd("a", b'APPEND "' + name.encode() + b'" {5+}\r\nhello')
        assert reply.startswith(b"a NO"), reply
    assert not list((srv.data_dir / "mail").rglob("bob*")) or not any(
        (srv.data_dir / "mail" / "localhost" / "bob").rglob("*:2,*"))


def test_copy_and_move_cannot_reach_another_user(srv):
    deliver(srv)
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        c.cmd("s", "SELECT INBOX")
        for target in ("../bob", "#users.bob.INBOX", "/bob", "~bob/INBOX"):
            assert b"c NO" in c.cmd("c", f'COPY 1 "{target}"')
            assert b"m NO" in c.cmd("m", f'MOVE 1 "{target}"')
    assert srv.maildir_files(BOB) == []


def test_two_sessions_see_each_others_changes(srv):
    deliver(srv)
    deliver(srv)
    with Raw(srv.imap_port) as a, Raw(srv.imap_port) as b:
        for c in (a, b):
            c.login(ALICE, PASSWORD)
            c.cmd("s", "SELECT INBOX")
        a.cmd("1", "STORE 1 +FLAGS.SILENT (\\Seen)")
        assert b"* 1 FETCH (UID 1 FLAGS (\\Seen))" in b.cmd("n", "NOOP")
        a.cmd("2", "STORE 2 +FLAGS (\\Deleted)")
        a.cmd("3", "EXPUNGE")
        reply = b.cmd("f", "FETCH 1:2 (FLAGS)")          # no EXPUNGE while answering FETCH
        assert b"* 2 EXPUNGE" not in reply and b"[EXPUNGEISSUED]" in reply
        assert b"* 2 EXPUNGE" in b.cmd("n2", "NOOP")
        a.cmd("4", b"APPEND INBOX {5+}\r\nhello")
        assert b"* 2 EXISTS" in b.cmd("n3", "NOOP")


def test_idle_sees_an_smtp_delivery_within_a_second(srv):
    srv.add_client("local", "127.0.0.0/8")
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        c.cmd("s", "SELECT INBOX")
        c.send(b"i IDLE\r\n")
        assert c.line() == b"+ idling\r\n"
        sent = time.monotonic()
        with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=5) as smtp:
            smtp.sendmail("bob@example.org", [ALICE], MSG)
        assert c.line() == b"* 1 EXISTS\r\n"
        assert time.monotonic() - sent < 1.0 + 0.5        # SMTP's own round trips included
        assert c.line() == b"* 1 RECENT\r\n"
        c.send(b"DONE\r\n")
        assert c.line() == b"i OK IDLE terminated\r\n"


def test_idle_sees_another_sessions_flags_and_expunges(srv):
    deliver(srv)
    deliver(srv)
    with Raw(srv.imap_port) as idler, Raw(srv.imap_port) as other:
        for c in (idler, other):
            c.login(ALICE, PASSWORD)
            c.cmd("s", "SELECT INBOX")
        idler.send(b"i IDLE\r\n")
        assert idler.line() == b"+ idling\r\n"
        other.cmd("1", "UID STORE 2 +FLAGS.SILENT (\\Flagged)")
        assert idler.line() == b"* 2 FETCH (UID 2 FLAGS (\\Flagged \\Recent))\r\n"
        other.cmd("2", "UID STORE 1 +FLAGS.SILENT (\\Deleted)")
        assert idler.line().endswith(b"FLAGS (\\Deleted \\Recent))\r\n")
        other.cmd("3", "EXPUNGE")
        assert idler.line() == b"* 1 EXPUNGE\r\n"
        idler.send(b"DONE\r\n")
        assert idler.line() == b"i OK IDLE terminated\r\n"


def test_recent_goes_to_the_first_session_only(srv):
    deliver(srv)
    a, b = client(srv), client(srv)
    a.select("INBOX")
    b.select("INBOX")
    assert a.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent))"]
    assert b.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS ())"]


# -- login and TLS -----------------------------------------------------------------------------
def test_capabilities_before_and_after_login(srv):
    with Raw(srv.imap_port) as c:
        assert c.greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
        before = c.cmd("c", "CAPABILITY")
        for cap in (b"STARTTLS", b"AUTH=PLAIN", b"SASL-IR", b"IDLE", b"LITERAL+"):
            assert cap in before
        assert b"LOGINDISABLED" not in before                # loopback may log in in clear
        c.login(ALICE, PASSWORD)
        after = c.cmd("c2", "CAPABILITY")
        for cap in (b"UIDPLUS", b"MOVE", b"NAMESPACE", b"UNSELECT", b"CHILDREN", b"SPECIAL-USE", b"ENABLE",
                    b"ID", b"APPENDLIMIT="):
            assert cap in after
        assert b"STARTTLS" not in after


def test_authenticate_plain_with_and_without_initial_response(srv):
    import base64
    token = base64.b64encode(f"\0{ALICE}\0{PASSWORD}".encode())
    with Raw(srv.imap_port) as c:
        assert b"a OK [CAPABILITY" in c.cmd("a", b"AUTHENTICATE PLAIN " + token)
    with Raw(srv.imap_port) as c:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        assert c.line() == b"+ \r\n"
        c.send(token + b"\r\n")
        assert c.until(b"a").startswith(b"a OK")
    with Raw(srv.imap_port) as c:
        c.send(b"a AUTHENTICATE PLAIN\r\n")
        c.line()
        c.send(b"*\r\n")
        assert c.until(b"a").startswith(b"a BAD")


def test_wrong_password_gets_no_within_15_seconds_and_events(srv):
    with Raw(srv.imap_port, timeout=16) as c:
        for i in range(2):
            started = time.monotonic()
            assert c.cmd(f"x{i}", f'LOGIN {ALICE} "wrong"').startswith(f"x{i} NO [AUTHENTICATIONFAILED]".encode())
            assert time.monotonic() - started < 15
        assert c.cmd("y", f'LOGIN {ALICE} "wrong"').endswith(b"* BYE Too many failed logins\r\n") or c.closed()
    assert srv.core.logins.recent("127.0.0.1") == 3       # the throttle shared with SMTP and POP3
    client(srv).logout()
    srv.wait_for(lambda: srv.events_of(ConnectionClosed), what="close events")
    assert srv.events_of(AuthFailed)[0].proto == "imap"
    assert {e.proto for e in srv.events_of(AuthSucceeded)} == {"imap"}
    assert any(e.proto == "imap" and e.state == "AUTHENTICATED" for e in srv.events_of(SessionChanged))
    assert all(e.proto == "imap" for e in srv.events_of(ConnectionOpened))


def test_starttls_then_login_and_pipelined_plaintext_is_discarded(srv):
    with Raw(srv.imap_port) as c:
        c.send(b"t STARTTLS\r\nx LOGIN alice@localhost wrong\r\n")   # one write: an injection attempt
        assert c.line() == b"t OK Begin TLS negotiation now\r\n"
        c.sock = insecure_context().wrap_socket(c.sock, server_hostname="localhost")
        c.buffer = b""
        reply = c.cmd("c", "CAPABILITY")
        assert reply.startswith(b"* CAPABILITY") and b"STARTTLS" not in reply and b"x NO" not in reply
        assert c.login(ALICE, PASSWORD).startswith(b"* ") is False
    assert srv.core.logins.recent("127.0.0.1") == 0      # the injected LOGIN never ran


def test_implicit_tls_listener(tmp_path):
    srv = start(tmp_path, imap={"listen": ["127.0.0.1:0"], "tls_listen": ["127.0.0.1:0"]},
                pop3={"listen": ["127.0.0.1:0"], "tls_listen": ["127.0.0.1:0"]})
    try:
        port = next(li.port for li in srv.core.listeners if li.proto == "imaps")
        m = imaplib.IMAP4_SSL("127.0.0.1", port, ssl_context=insecure_context(), timeout=5)
        assert "STARTTLS" not in m.capabilities and "AUTH=PLAIN" in m.capabilities
        m.login(ALICE, PASSWORD)
        m.logout()
        import poplib
        pop_port = next(li.port for li in srv.core.listeners if li.proto == "pop3s")
        p = poplib.POP3_SSL("127.0.0.1", pop_port, context=insecure_context(), timeout=5)
        p.user(ALICE)
        p.pass_(PASSWORD)
        p.quit()
    finally:
        srv.stop()


def test_an_empty_tls_listen_is_accepted_and_a_bind_failure_shows(tmp_path):
    blocker = RunningServer(make_config(tmp_path / "a")).start()
    try:
        taken = f"127.0.0.1:{blocker.imap_port}"
        srv = start(tmp_path, imap={"listen": [taken], "tls_listen": []})
        try:
            failed = [li for li in srv.core.listeners if li.proto == "imap"]
            assert failed and not failed[0].ok and failed[0].error
        finally:
            srv.stop()
    finally:
        blocker.stop()


def test_a_folder_holds_26_keywords_then_no_limit(srv):
    deliver(srv)
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        c.cmd("s", "SELECT INBOX")
        words = " ".join(f"k{i}" for i in range(26))
        assert c.cmd("a", f"STORE 1 +FLAGS.SILENT ({words})").endswith(b"a OK STORE completed\r\n")
        assert c.cmd("b", "STORE 1 +FLAGS (one-too-many)").startswith(b"b NO [LIMIT]")
        assert b"k25" in c.cmd("f", "FETCH 1 FLAGS")


def test_a_selected_folder_deleted_by_another_session_ends_with_bye(srv):
    with Raw(srv.imap_port) as a, Raw(srv.imap_port) as b:
        for c in (a, b):
            c.login(ALICE, PASSWORD)
        a.cmd("c", "CREATE Doomed")
        b.cmd("s", "SELECT Doomed")
        assert a.cmd("d", "DELETE Doomed") == b"d OK DELETE completed\r\n"
        b.send(b"n NOOP\r\n")
        assert b.line() == b"* BYE The selected mailbox no longer exists\r\n"
        assert b.closed()


def test_pop3_and_imap_read_the_same_inbox(srv):
    import poplib
    for i in range(3):
        deliver(srv, MSG + b"%d\r\n" % i)
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        c.cmd("s", "SELECT INBOX")                       # UIDs given, files moved to cur/
        c.cmd("d", "STORE 3 +FLAGS.SILENT (\\Deleted)")
        c.cmd("e", "EXPUNGE")
        pop = poplib.POP3("127.0.0.1", srv.pop3_port, timeout=5)
        pop.user(ALICE)
        pop.pass_(PASSWORD)
        assert pop.stat()[0] == 2                       # IMAP's expunge is gone for POP3 too
        pop.dele(1)
        pop.quit()
        assert c.cmd("n", "NOOP") == b"* 1 EXPUNGE\r\nn OK NOOP completed\r\n"
        assert c.cmd("f", "UID FETCH 1:* (UID)") == b"* 1 FETCH (UID 2)\r\nf OK FETCH completed\r\n"


def test_pipelined_commands_are_all_answered_in_order(srv):
    for i in range(20):
        deliver(srv, MSG + b"%d\r\n" % i)
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        c.cmd("s", "SELECT INBOX")
        c.send(b"".join(b"p%d UID FETCH %d (BODY.PEEK[])\r\n" % (n, n % 20 + 1) for n in range(300)))
        reply = c.until(b"p299")
    tags = [line.split()[0] for line in reply.split(b"\r\n") if line.startswith(b"p")]
    assert tags == [b"p%d" % n for n in range(300)]
    assert reply.count(b"Hi Alice") == 300


def test_the_uid_flags_fast_lane_answers_as_the_general_path(srv):
    import re
    for i in range(6):
        deliver(srv, MSG + b"%d\r\n" % i)
    with Raw(srv.imap_port) as c:
        c.login(ALICE, PASSWORD)
        c.cmd("s", "SELECT INBOX")
        c.cmd("a", "STORE 2,4 +FLAGS.SILENT (\\Seen $Work)")
        c.cmd("b", "STORE 5 +FLAGS.SILENT (\\Flagged)")
        for sequence in ("1:*", "2:3,5", "4:*", "9:12"):
            fast = c.cmd("f", f"UID FETCH {sequence} (UID FLAGS)")
            general = c.cmd("g", f"UID FETCH {sequence} (FLAGS UID)")
            swapped = re.sub(rb"FLAGS (\([^)]*\)) UID (\d+)", rb"UID \2 FLAGS \1", general)
            assert fast.replace(b"f OK", b"g OK") == swapped, sequence
        assert b"* 5 FETCH (UID 5 FLAGS (\\Flagged \\Recent))" in c.cmd("h", "FETCH 1:* (UID FLAGS)")
