"""One delivery attempt and what it means for the queue entry.

Pure decisions in tables first; then whole attempts through the scheduler,
with real DNS (dnsmasq on 127.0.0.1) and real SMTP servers (aiosmtpd on
127.0.0.2 and up); see tests/dnsworld.py for the world they make up.
"""

from __future__ import annotations

import asyncio

import pytest
from delivery_harness import (
    WIRE_BODY,
    Dsns,
    harnesses_fixture,  # noqa: F401 (a fixture)
    make_config,
    smtp_port_fixture,  # noqa: F401 (a fixture)
    spool_files,
)
from dnsworld import A_ONLY_HOST, MX_HOST_2, FakeMX, free_port

from mailtui.config import Endpoint
from mailtui.dns.resolver import MailHost, PermanentDnsError, TemporaryDnsError
from mailtui.events import Bounced, Deferred, DeliveredRemote, DeliveryAttempt, Notice
from mailtui.send.attempt import (
    ADMIN_BOUNCE_TEXT,
    by_domain,
    error_outcome,
    log_entry,
    record,
    settle,
    without_self,
)
from mailtui.send.courier import Outcome
from mailtui.store.queue import QueueItem, RecipientState

pytestmark = pytest.mark.timeout(30)


# -- pure rules ----------------------------------------------------------------

def test_without_self():
    hosts = [MailHost("mx1.test", 10, ["127.0.0.2"]), MailHost("mail.local.test", 20, ["127.0.0.9"]),
             MailHost("mx3.test", 30, ["127.0.0.3"])]
    assert [h.name for h in without_self("d.test", hosts, "MAIL.local.test")] == ["mx1.test"]
    assert without_self("d.test", hosts, "other.test") == hosts
    with pytest.raises(PermanentDnsError) as info:
        without_self("d.test", hosts[1:], "mail.local.test")
    assert info.value.status == "5.4.6"


def mx(*hosts: tuple[str, int]) -> list[MailHost]:
    return [MailHost(name, preference, ["127.0.0.9"]) for name, preference in hosts]


@pytest.mark.parametrize("hosts, me, kept", [
    (mx(("a.test", 10), ("b.test", 20)), "me.test", ["a.test", "b.test"]),
    (mx(("a.test", 10), ("me.test", 20), ("b.test", 20), ("c.test", 30)), "me.test", ["a.test"]),
    (mx(("a.test", 5), ("ME.test", 20), ("b.test", 10)), "me.TEST.", ["a.test", "b.test"]),
    (mx(("a.test", 5), ("me.test", 30), ("me.test", 10)), "me.test", ["a.test"]),
    (mx(("me.test", 10), ("a.test", 10), ("b.test", 20)), "me.test", None),
    (mx(("me.test", 0)), "me.test", None),
])
def test_without_self_table(hosts, me, kept):
    if kept is None:
        with pytest.raises(PermanentDnsError, match="loops back to myself"):
            without_self("d.test", hosts, me)
    else:
        assert [h.name for h in without_self("d.test", hosts, me)] == kept


@pytest.mark.parametrize("addresses, groups", [
    ([], {}),
    (["a@x.test"], {"x.test": ["a@x.test"]}),
    (["a@X.test", "b@y.test", "c@x.TEST"], {"x.test": ["a@X.test", "c@x.TEST"], "y.test": ["b@y.test"]}),
    (["a@[127.0.0.1]", "b@[IPv6:::1]"], {"[127.0.0.1]": ["a@[127.0.0.1]"], "[ipv6:::1]": ["b@[IPv6:::1]"]}),
    (["bøb@Bücher.test", "\"a@b\"@x.test"], {"bücher.test": ["bøb@Bücher.test"], "x.test": ["\"a@b\"@x.test"]}),
])
def test_by_domain(addresses, groups):
    grouped = by_domain(RecipientState(a) for a in addresses)
    assert {d: [r.address for r in rs] for d, rs in grouped.items()} == groups
    assert list(grouped) == list(groups)  # one transaction per domain, first seen first


@pytest.mark.parametrize("exc, permanent, status, text", [
    (PermanentDnsError("5.1.2", "domain nx.test does not exist"), True, "5.1.2",
     "domain nx.test does not exist"),
    (PermanentDnsError("5.1.10", "domain n.test does not accept mail"), True, "5.1.10",
     "domain n.test does not accept mail"),
    (TemporaryDnsError("4.4.3", "DNS lookup for mx.test failed"), False, "4.4.3",
     "DNS lookup for mx.test failed"),
    (RuntimeError("a bug"), False, "4.3.0",
     "internal error while delivering to d.test: RuntimeError('a bug')"),
    (KeyError("x"), False, "4.3.0", "internal error while delivering to d.test: KeyError('x')"),
])
def test_error_outcome(exc, permanent, status, text):
    outcome = error_outcome("d.test", exc)
    assert (outcome.ok, outcome.permanent, outcome.status, outcome.text) == (False, permanent, status, text)
    assert (outcome.code, outcome.remote_mta, outcome.tls, outcome.diagnostic) == (0, "", False, "")


def outcome(kind: str) -> Outcome:
    """Outcomes as a courier gives them: by SMTP reply, or with no server answering."""
    return {
        "ok": Outcome(ok=True, permanent=False, code=250, status="2.0.0", text="host mx said: 250 ok",
                      remote_mta="mx.test", tls=True, reply="250 2.0.0 ok"),
        "ok-quiet": Outcome(ok=True, permanent=False, code=250, status="2.0.0", text="",
                            remote_mta="mx.test", tls=False),
        "busy": Outcome(ok=False, permanent=False, code=451, status="4.2.0", text="host mx said: 451 busy",
                        remote_mta="mx.test", tls=False, reply="451 4.2.0 busy"),
        "refused": Outcome(ok=False, permanent=False, code=0, status="4.4.1",
                           text="connection refused by mx.test[127.0.0.9]:25", remote_mta="", tls=False),
        "unknown": Outcome(ok=False, permanent=True, code=550, status="5.1.1",
                           text="host mx said: 550 no such user", remote_mta="mx.test", tls=True,
                           reply="550 5.1.1 no such user"),
        "nx": Outcome(ok=False, permanent=True, code=0, status="5.1.2", text="domain nx.test does not exist",
                      remote_mta="", tls=False),
    }[kind]


@pytest.mark.parametrize("kind, state, diagnostic, remote_mta, last_error", [
    ("ok", "delivered", "smtp; 250 2.0.0 ok", "dns; mx.test", ""),
    ("ok-quiet", "delivered", "", "dns; mx.test", ""),
    ("busy", "deferred", "smtp; 451 4.2.0 busy", "dns; mx.test", "host mx said: 451 busy"),
    ("refused", "deferred", "X-mailtui; connection refused by mx.test[127.0.0.9]:25", "",
     "connection refused by mx.test[127.0.0.9]:25"),
    ("unknown", "failed", "smtp; 550 5.1.1 no such user", "dns; mx.test", "host mx said: 550 no such user"),
    ("nx", "failed", "X-mailtui; domain nx.test does not exist", "", "domain nx.test does not exist"),
])
def test_record(kind, state, diagnostic, remote_mta, last_error):
    rcpt = RecipientState("bob@mx.test", state="deferred", attempts=2, last_error="old",
                          diagnostic="smtp; old", remote_mta="dns; old.test", updated=1.0)
    record(rcpt, outcome(kind), 1000.0)
    assert (rcpt.state, rcpt.diagnostic, rcpt.remote_mta, rcpt.last_error) == (
        state, diagnostic, remote_mta, last_error)
    assert (rcpt.attempts, rcpt.updated, rcpt.status) == (3, 1000.0, outcome(kind).status)


NOW = 1_000_000.0
GAVE_UP = "gave up after 3 delivery attempts; the last attempt failed: "
TOO_OLD = "message was in the queue for 1 hour (the limit is 1 hour); the last attempt failed: "


@pytest.mark.parametrize("tried, before, age, bounce, delivered, deferred, failed, last_error", [
    # what the remote hosts said decides, while the limits are far
    ({"a": "ok", "b": "ok-quiet"}, 0, 60, False, "ab", "", {}, ""),
    ({"a": "busy"}, 0, 60, False, "", "a", {}, "host mx said: 451 busy"),
    ({"a": "unknown", "b": "busy", "c": "ok"}, 1, 60, False, "c", "b",
     {"a": "host mx said: 550 no such user"}, "host mx said: 451 busy"),
    ({"a": "nx", "b": "unknown"}, 0, 60, False, "", "",
     {"a": "domain nx.test does not exist", "b": "host mx said: 550 no such user"},
     "domain nx.test does not exist"),
    # the third attempt is the last (max_attempts 3); a message an hour old is too old
    ({"a": "busy", "b": "ok"}, 2, 60, False, "b", "", {"a": GAVE_UP + "host mx said: 451 busy"},
     "host mx said: 451 busy"),
    ({"a": "unknown"}, 2, 60, False, "", "", {"a": "host mx said: 550 no such user"},
     "host mx said: 550 no such user"),
    ({"a": "refused"}, 0, 3600, False, "", "",
     {"a": TOO_OLD + "connection refused by mx.test[127.0.0.9]:25"},
     "connection refused by mx.test[127.0.0.9]:25"),
    ({"a": "busy"}, 0, 3599, False, "", "a", {}, "host mx said: 451 busy"),
    # bounced by the administrator while the attempt ran: what is still pending fails
    ({"a": "busy", "b": "ok"}, 0, 60, True, "b", "", {"a": ADMIN_BOUNCE_TEXT}, "host mx said: 451 busy"),
    ({"a": "busy", "b": "unknown"}, 2, 60, True, "", "",
     {"b": "host mx said: 550 no such user", "a": ADMIN_BOUNCE_TEXT}, "host mx said: 451 busy"),
    ({"a": "ok"}, 0, 60, True, "a", "", {}, ""),
])
def test_settle(tried, before, age, bounce, delivered, deferred, failed, last_error):
    rcpts = {name: RecipientState(f"{name}@mx.test", state="deferred" if before else "queued",
                                  attempts=before) for name in tried}
    done = RecipientState("z@mx.test", state="delivered", attempts=1)
    item = QueueItem(id="ID", sender="s@local.test", recipients=[done, *rcpts.values()],
                     arrival=NOW - age, next_attempt=0.0, attempts=before)
    verdict = settle(item, [(rcpts[n], outcome(k)) for n, k in tried.items()], NOW, bounce=bounce,
                     max_attempts=3, max_lifetime=3600)

    assert [(r.address[0], o) for r, o in verdict.delivered] == [(n, outcome(tried[n])) for n in delivered]
    assert "".join(r.address[0] for r in verdict.deferred) == deferred
    assert {r.address[0]: r.last_error for r in verdict.failed} == failed
    assert [r.address[0] for r in verdict.failed] == list(failed)  # the order of the DSN
    assert {n for n, r in rcpts.items() if r.state == "delivered"} == set(delivered)
    assert {n for n, r in rcpts.items() if r.state == "deferred"} == set(deferred)
    assert {n for n, r in rcpts.items() if r.state == "failed"} == set(failed)
    assert item.attempts == before + 1 and item.last_error == last_error
    assert done.state == "delivered" and done.attempts == 1  # a recipient done before is left alone
    if bounce:
        assert all(r.status == "5.0.0" and r.updated == NOW for r in verdict.failed
                   if r.last_error == ADMIN_BOUNCE_TEXT)


def test_log_entry():
    item = QueueItem(id="ID1", sender="alice@local.test", recipients=[], arrival=0.0, next_attempt=0.0,
                     attempts=2)
    rcpt = RecipientState("bob@MX.test", state="deferred", attempts=2, last_error="busy", status="4.2.0",
                          diagnostic="smtp; 451 4.2.0 busy", remote_mta="dns; mx2.mx.test")
    assert log_entry(item, rcpt, "deferred", 123.0, next_attempt=456.0) == {
        "at": 123.0, "msg_id": "ID1", "sender": "alice@local.test", "recipient": "bob@MX.test",
        "domain": "mx.test", "result": "deferred", "attempt": 2, "status": "4.2.0",
        "remote_mta": "dns; mx2.mx.test", "diagnostic": "smtp; 451 4.2.0 busy", "error": "busy",
        "next_attempt": 456.0}



# -- whole attempts ------------------------------------------------------------

async def test_delivery_with_mx_fallback(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port) as mx2:   # mx1 (preference 10) is down
        item = await h.enqueue(["bob@mx.test", "carol@mx.test", "dan@aonly.test"])
        async with FakeMX(A_ONLY_HOST, smtp_port) as aonly:
            await h.wait_settled(item.id)
    assert sorted(r for m in mx2.messages for r in m.rcpt_tos) == ["bob@mx.test", "carol@mx.test"]
    assert len(mx2.messages) == 1 and mx2.messages[0].content == WIRE_BODY
    assert [m.rcpt_tos for m in aonly.messages] == [["dan@aonly.test"]]
    delivered = h.events.of(DeliveredRemote)
    assert {(e.recipient, e.remote_mta) for e in delivered} == {
        ("bob@mx.test", "mx2.mx.test"), ("carol@mx.test", "mx2.mx.test"),
        ("dan@aonly.test", "aonly.test")}
    assert all(e.reply.startswith("250") for e in delivered)
    attempts = h.events.of(DeliveryAttempt)
    assert {(e.domain, e.attempt) for e in attempts} == {("mx.test", 1), ("aonly.test", 1)}
    assert h.dsns.sent == [] and not h.events.of(Bounced)
    assert spool_files(tmp_path) == []
    log = h.store.recent("deliveries", 10)
    assert {d["recipient"] for d in log if d["result"] == "delivered"} == {
        "bob@mx.test", "carol@mx.test", "dan@aonly.test"}
    assert any(d["remote_mta"] == "dns; mx2.mx.test" for d in log)
    assert h.store.recent("dns", 50)


async def test_retries_then_gives_up_with_a_dsn(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port):
        item = await h.enqueue(["later@mx.test", "bob@mx.test"])
        await h.wait_settled(item.id)
    deferred = h.events.of(Deferred)
    assert [(e.recipient, e.attempts) for e in deferred] == [("later@mx.test", 1), ("later@mx.test", 2)]
    assert all(e.next_attempt > e.at for e in deferred)
    assert [e.attempt for e in h.events.of(DeliveryAttempt)] == [1, 2, 3]
    assert [e.recipient for e in h.events.of(DeliveredRemote)] == ["bob@mx.test"]
    [bounce] = h.events.of(Bounced)
    assert bounce.recipient == "later@mx.test" and bounce.dsn_id == "DSN1"

    [(sender, recipients, _)] = h.dsns.sent
    assert sender == "" and recipients == ["alice@local.test"]
    dsn = h.dsns.parsed()
    assert dsn.get_content_type() == "multipart/report"
    text, status, original = dsn.iter_parts()
    words = " ".join(text.get_content().split())
    assert "later@mx.test" in words and "gave up after 3 delivery attempts" in words
    assert "451 4.2.0 mailbox busy" in words and "bob@mx.test" not in words
    _, rcpt = status.get_payload()
    assert rcpt["Final-Recipient"] == "rfc822; later@mx.test"
    assert rcpt["Action"] == "failed"
    assert rcpt["Status"] == "4.2.0"
    assert rcpt["Remote-MTA"] == "dns; mx2.mx.test"
    assert rcpt["Diagnostic-Code"] == "smtp; 451 4.2.0 mailbox busy, try again later"
    assert "Message-ID: <1@local.test>" in original.get_content()
    assert spool_files(tmp_path) == []


async def test_5xx_bounces_at_once(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        item = await h.enqueue(["bad@mx.test", "bob@mx.test"])
        await h.wait_settled(item.id)
    assert len(h.events.of(DeliveryAttempt)) == 1 and not h.events.of(Deferred)
    assert mx.messages[0].rcpt_tos == ["bob@mx.test"]
    _, rcpt = h.dsns.parsed().get_payload()[1].get_payload()
    assert rcpt["Final-Recipient"] == "rfc822; bad@mx.test"
    assert rcpt["Status"] == "5.1.1"
    assert rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"


@pytest.mark.parametrize("domain, status, words", [
    ("nullmx.test", "5.1.10", "does not accept mail"),
    ("nx.test", "5.1.2", "does not exist"),
])
async def test_dns_failures_bounce_without_retry(dns_world, smtp_port, tmp_path, harnesses,
                                                 domain, status, words):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    item = await h.enqueue([f"bob@{domain}"])
    await h.wait_settled(item.id)
    assert len(h.events.of(DeliveryAttempt)) == 1 and not h.events.of(Deferred)
    [bounce] = h.events.of(Bounced)
    assert words in bounce.error
    dsn = h.dsns.parsed()
    _, rcpt = dsn.get_payload()[1].get_payload()
    assert rcpt["Status"] == status and rcpt["Action"] == "failed"
    assert words in dsn.get_payload()[0].get_content()


async def test_no_bounce_for_the_null_sender(dns_world, smtp_port, tmp_path, harnesses):
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port)).start()
    item = await h.enqueue(["bob@nullmx.test"], sender="")
    await h.wait_settled(item.id)
    assert h.dsns.sent == []
    [bounce] = h.events.of(Bounced)
    assert bounce.recipient == "bob@nullmx.test" and bounce.dsn_id == ""
    assert spool_files(tmp_path) == []


async def test_dns_down_defers_not_bounces(smtp_port, tmp_path, harnesses):
    dead = Endpoint("127.0.0.1", free_port(udp=True))
    h = harnesses(tmp_path, make_config(tmp_path, (dead,), smtp_port, dns_timeout=0.4,
                                        max_attempts=10)).start()
    item = await h.enqueue(["bob@mx.test"])
    await h.events.wait_for(lambda e: isinstance(e, Deferred), count=2, timeout=10)
    await h.stop()
    assert not h.events.of(Bounced) and h.dsns.sent == []
    [rcpt] = item.recipients
    assert rcpt.state == "deferred" and rcpt.status == "4.4.3"
    assert "mx.test" in rcpt.last_error
    assert spool_files(tmp_path) == [f"{item.id}.json", f"{item.id}.msg"]


async def test_failed_submit_drops_the_dsn_with_a_notice(dns_world, smtp_port, tmp_path, harnesses):
    dsns = Dsns()
    dsns.error = OSError("disk full")
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port), dsns).start()
    item = await h.enqueue(["bob@nx.test"])
    await h.wait_settled(item.id)
    [notice] = h.events.of(Notice)
    assert notice.level == "error" and "disk full" in notice.text and item.id in notice.text
    assert h.events.of(Bounced)[0].dsn_id == ""
    assert spool_files(tmp_path) == []



# -- the courier seam: attempts with a scripted courier, no network -------------------

class ScriptedCourier:
    """A :class:`~mailtui.send.courier.Courier` that answers by local part, as FakeMX does."""

    def __init__(self, raises: Exception | None = None, hold: bool = False):
        self.calls: list[dict] = []
        self.raises = raises
        self.hold = hold
        self.called = asyncio.Event()

    async def deliver(self, hosts, *, sender, recipients, body, smtputf8=False, body_8bit=False,
                      require_tls=None, verify_tls=None):
        self.calls.append({"hosts": hosts, "sender": sender, "recipients": recipients, "body": body,
                           "smtputf8": smtputf8, "body_8bit": body_8bit})
        self.called.set()
        if self.hold:
            await asyncio.Event().wait()
        if self.raises is not None:
            raise self.raises
        kinds = {"bad": "unknown", "later": "busy"}
        return {r: outcome(kinds.get(r.partition("@")[0], "ok")) for r in recipients}

    def close(self) -> None:
        pass


def offline_config(tmp_path):
    return make_config(tmp_path, (), 25)  # domain literals need no DNS


async def test_a_courier_plugs_into_the_attempt(tmp_path, harnesses):
    courier = ScriptedCourier()
    h = harnesses(tmp_path, offline_config(tmp_path), courier=courier)
    item = await h.enqueue(["a@[127.0.0.9]", "bad@[127.0.0.9]", "later@[127.0.0.8]"], body_8bit=True)
    await h.transfer.attempt(item)

    by_host = {c["hosts"][0].name: c for c in courier.calls}
    assert set(by_host) == {"[127.0.0.9]", "[127.0.0.8]"}
    assert by_host["[127.0.0.9]"]["hosts"] == [MailHost("[127.0.0.9]", 0, ["127.0.0.9"])]
    assert by_host["[127.0.0.9]"]["recipients"] == ["a@[127.0.0.9]", "bad@[127.0.0.9]"]
    assert by_host["[127.0.0.8]"]["recipients"] == ["later@[127.0.0.8]"]
    assert all(c["sender"] == "alice@local.test" and c["body_8bit"] and not c["smtputf8"]
               and c["body"] == h.queue.read_body(item) for c in courier.calls)

    assert {e.domain for e in h.events.of(DeliveryAttempt)} == {"[127.0.0.9]", "[127.0.0.8]"}
    assert [e.recipient for e in h.events.of(DeliveredRemote)] == ["a@[127.0.0.9]"]
    assert [e.recipient for e in h.events.of(Deferred)] == ["later@[127.0.0.8]"]
    assert [(e.recipient, e.dsn_id) for e in h.events.of(Bounced)] == [("bad@[127.0.0.9]", "DSN1")]
    assert [s[1] for s in h.dsns.sent] == [["alice@local.test"]]
    assert sorted((d["recipient"], d["result"]) for d in h.store.recent("deliveries", 10)) == [
        ("a@[127.0.0.9]", "delivered"), ("bad@[127.0.0.9]", "bounced"), ("later@[127.0.0.8]", "deferred")]

    [reloaded] = harnesses(tmp_path, offline_config(tmp_path)).queue.items()  # what the spool says
    assert [(r.address, r.state) for r in reloaded.recipients] == [
        ("a@[127.0.0.9]", "delivered"), ("bad@[127.0.0.9]", "failed"), ("later@[127.0.0.8]", "deferred")]
    assert reloaded.attempts == 1 and reloaded.dsn_sent and reloaded.next_attempt > item.arrival


async def test_a_courier_that_breaks_defers_the_mail(tmp_path, harnesses):
    h = harnesses(tmp_path, offline_config(tmp_path), courier=ScriptedCourier(raises=RuntimeError("bug")))
    item = await h.enqueue(["a@[127.0.0.9]"])
    await h.transfer.attempt(item)
    [deferred] = h.events.of(Deferred)
    assert deferred.error == "internal error while delivering to [127.0.0.9]: RuntimeError('bug')"
    assert item.recipients[0].status == "4.3.0" and item.recipients[0].state == "deferred"
    assert not h.events.of(Bounced) and h.dsns.sent == []


async def test_a_cancelled_attempt_leaves_the_spool_as_it_was(tmp_path, harnesses):
    courier = ScriptedCourier(hold=True)
    h = harnesses(tmp_path, offline_config(tmp_path), courier=courier)
    item = await h.enqueue(["a@[127.0.0.9]", "b@[127.0.0.8]"])
    spooled = h.queue.dir / f"{item.id}.msg"
    before = spooled.read_bytes()
    attempt = asyncio.create_task(h.transfer.attempt(item, lambda: pytest.fail("asked to bounce")))
    await asyncio.wait_for(courier.called.wait(), 5)
    attempt.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(attempt, 5)
    assert spooled.read_bytes() == before
    assert spool_files(tmp_path) == [f"{item.id}.msg"]        # no state file before an attempt ends
    assert [(r.state, r.attempts) for r in item.recipients] == [("queued", 0), ("queued", 0)]
    assert item.attempts == 0
    assert not h.events.of(Deferred) and not h.events.of(Bounced) and not h.events.of(DeliveredRemote)
