"""Property tests (Hypothesis) of everything that reads peer input.

Pure parsers first: SMTP paths and parameters, the DATA unstuffer, reply
codes, relay policy, configuration. Then the same ideas over real sockets:
random command lines to a running server never crash it, never get an
ill-formed reply, and never open a relay. (POP3's ``parse_command`` has its
own property test in test_pop3.py; here POP3 is fuzzed over the socket.)
"""

from __future__ import annotations

import re
import string

import pytest
from harness import RunningServer, make_config
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wire import Dialog, bare_line_ends, stuff

from mailtui.addresses import (
    MAX_DOMAIN,
    MAX_LOCAL_PART,
    Address,
    AddressError,
    parse_params,
    parse_path,
    split_path,
)
from mailtui.config import Config, ConfigError, from_mapping, parse_endpoint
from mailtui.receive.message import unstuff_and_normalise
from mailtui.receive.policy import Peer, Policy
from mailtui.replies import add_enhanced_status

pytestmark = pytest.mark.timeout(120)

# Characters that matter to address syntax, plus a little of everything else.
ADDRESS_ALPHABET = st.sampled_from(list('ab.@<>"\\%!:,[]-_+ 0123456789xyzIPv6') + ["é", "\x00", "\udcff", "ü"])
address_text = st.one_of(
    st.text(ADDRESS_ALPHABET, max_size=40),
    st.builds(lambda l, d: f"<{l}@{d}>", st.text(ADDRESS_ALPHABET, max_size=20),
              st.text(ADDRESS_ALPHABET, max_size=20)),
    st.builds(lambda l, d: f'<"{l}"@{d}>', st.text(ADDRESS_ALPHABET, max_size=20),
              st.sampled_from(["localhost", "remote.test", "[127.0.0.1]", "[IPv6:::1]", "x"])),
    st.text(max_size=80),
)
FAST = settings(max_examples=300, deadline=None)


# -- addresses ---------------------------------------------------------------------------

@FAST
@given(address_text, st.booleans(), st.booleans())
def test_parse_path_is_total_and_its_result_is_sound(text, null_ok, smtputf8):
    try:
        addr = parse_path(text, null_ok=null_ok, smtputf8=smtputf8, postmaster_domain="localhost")
    except AddressError as exc:
        assert re.fullmatch(r"5\d\d [245]\.\d{1,3}\.\d{1,3} .+", exc.reply), exc.reply
        return
    if addr is None:
        assert null_ok and text == "<>"
        return
    assert isinstance(addr, Address)
    assert 0 < len(addr.local.encode()) <= MAX_LOCAL_PART and 0 < len(addr.domain.encode()) <= MAX_DOMAIN
    assert "@" not in addr.domain and "%" not in addr.domain and "!" not in addr.domain
    assert addr.is_literal or addr.domain == addr.domain.lower()
    assert addr.is_literal or all(label and not label.startswith("-") for label in addr.domain.split("."))
    # The one parse is stable: printing and parsing again gives the same mailbox.
    again = parse_path(f"<{addr}>", null_ok=False, smtputf8=True)
    assert again == addr


@FAST
@given(st.text(string.printable + "é\x00", max_size=60))
def test_split_path_and_parse_params_are_total(arg):
    try:
        path, params = split_path(arg)
        parsed = parse_params(params, smtputf8=True)
    except AddressError as exc:
        assert exc.reply[:1] == "5"
        return
    assert path.startswith("<") and path.endswith(">")
    assert all(re.fullmatch(r"[A-Z0-9][A-Z0-9-]*", key) for key in parsed)


class Mailboxes:
    """Just enough registry for the policy: which mailboxes exist."""

    def __init__(self, *keys: str):
        self.keys = set(keys)

    def has_mailbox(self, key: str) -> bool:
        return key in self.keys


@pytest.fixture(scope="module")
def mx_policy():
    config = from_mapping({"server": {"hostname": "mail.test", "local_domains": ["localhost", "example.test"]},
                           "policy": {"accept_unregistered_for_local": True}})
    return Policy(config, Mailboxes("bob@localhost"))


@FAST
@given(address_text)
def test_policy_never_relays_for_an_unregistered_client(mx_policy, text):
    try:
        rcpt = parse_path(text, null_ok=False, smtputf8=True, postmaster_domain="localhost")
    except AddressError:
        return
    refusal, key = mx_policy.check_recipient(Peer(ip="192.0.2.1"), rcpt)
    if refusal is None:
        assert key in ("bob@localhost", "postmaster@localhost")   # a local mailbox, never remote
        assert rcpt.domain in ("localhost", "example.test")
    else:
        assert refusal.code >= 500


# -- DATA and replies --------------------------------------------------------------------

line_text = st.binary(max_size=30).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@FAST
@given(st.lists(line_text, max_size=12))
def test_unstuffing_undoes_stuffing(lines):
    body = b"".join(line + b"\r\n" for line in lines)
    assert unstuff_and_normalise(stuff(body)) == body


@FAST
@given(st.binary(max_size=200))
def test_normalised_data_has_only_crlf_line_ends(raw):
    assert not bare_line_ends(unstuff_and_normalise(raw))


@FAST
@given(st.from_regex(rb"\A[245][0-9][0-9]( [ -~]{0,40})?\Z"))
def test_every_reply_gets_an_enhanced_status_code(reply):
    out = add_enhanced_status(reply)
    assert re.match(rb"^[245]\d\d [245]\.\d{1,3}\.\d{1,3}( |$)", out) or len(reply) < 4, out
    assert out[4:].endswith(reply[4:])


# -- configuration -----------------------------------------------------------------------

SECTIONS = {"server": ["hostname", "data_dir", "local_domains", "postmaster"],
            "smtp": ["listen", "max_message_size", "max_recipients", "auth_require_tls", "idle_timeout",
                     "error_budget", "max_connections_per_ip"],
            "pop3": ["listen", "idle_timeout", "max_connections"],
            "dns": ["nameservers", "timeout"],
            "delivery": ["remote_port", "retry_intervals", "max_attempts", "retry_jitter"],
            "policy": ["accept_unregistered_for_local"], "bogus": ["x"]}
toml_value = st.recursive(
    st.one_of(st.booleans(), st.integers(-2**40, 2**40), st.floats(allow_nan=True), st.text(max_size=20),
              st.sampled_from(["127.0.0.1:25", "[::1]:25", "localhost", "mail.test", "", "0.0.0.0:99999"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(string.ascii_letters + "_.", max_size=5),
                                                                inner, max_size=2),
    max_leaves=6)
config_mapping = st.dictionaries(
    st.sampled_from(list(SECTIONS)),
    st.one_of(toml_value, st.dictionaries(st.sampled_from(sum(SECTIONS.values(), []) + ["nope"]),
                                          toml_value, max_size=4)),
    max_size=4)


@settings(max_examples=200, deadline=None)
@given(config_mapping)
def test_config_is_valid_or_one_clear_error(data):
    try:
        config = from_mapping(data)
    except ConfigError as exc:
        text = str(exc)
        assert text and "\n" not in text and ":" in text
        return
    assert isinstance(config, Config)


@pytest.mark.parametrize("value", [[], "25", {}])
def test_config_remote_port_of_the_wrong_type_is_a_config_error(value):
    with pytest.raises(ConfigError, match="delivery.remote_port"):
        from_mapping({"delivery": {"remote_port": value}})


@FAST
@given(st.text(max_size=40))
def test_parse_endpoint_is_total(text):
    try:
        ep = parse_endpoint(text, "smtp.listen")
    except ConfigError as exc:
        assert str(exc).startswith("smtp.listen: ")
        return
    assert 0 <= ep.port <= 65535


# -- over the wire -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def live(tmp_path_factory):
    config = make_config(tmp_path_factory.mktemp("props") / "data",
                         smtp={"listen": ["127.0.0.1:0"], "max_connections_per_ip": 100},
                         policy={"accept_unregistered_for_local": True})
    srv = RunningServer(config).start()
    srv.add_mailbox("bob@localhost")
    try:
        yield srv
    finally:
        srv.stop()


VERBS = ["EHLO", "HELO", "MAIL FROM:", "RCPT TO:", "DATA", "RSET", "NOOP", "VRFY", "EXPN", "HELP", "AUTH",
         "STARTTLS", "BDAT", "ETRN", "XCLIENT", "mail from:", "rcpt to:"]
smtp_line = st.one_of(
    st.builds(lambda v, a: (v + a).encode("utf-8", "surrogateescape"), st.sampled_from(VERBS), address_text),
    st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"")),
)
REPLY = re.compile(rb"^\d{3}[ -]")


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(smtp_line, min_size=1, max_size=8))
def test_random_smtp_dialogues(live, lines):
    assume(not any(line.upper().startswith((b"DATA", b"STARTTLS", b"QUIT")) for line in lines))
    with Dialog(live.smtp_port) as c:
        c.ehlo("fuzz.test")
        c.send(b"".join(line.rstrip(b"\r") + b"\r\n" for line in lines) + b"QUIT\r\n")
        replies = c.rest()
    assert replies, "no reply at all"
    for reply in replies:
        assert REPLY.match(reply), reply
        code = reply[:3]
        assert code[:1] in b"2345", reply
        if code[:1] in b"45" and code != b"421":
            assert re.match(rb"^\d{3}[ -][45]\.\d{1,3}\.\d{1,3}", reply), reply
        assert b"Error: (" not in reply, reply       # no exception text leaks out
    assert replies[-1][:3] in (b"221", b"421", b"502")
    assert len(live.core.queue) == 0                 # whatever was said, nothing was relayed


pop3_line = st.one_of(
    st.builds(lambda v, a: v + a, st.sampled_from([b"STAT", b"LIST ", b"RETR ", b"DELE ", b"TOP ", b"UIDL ",
                                                   b"NOOP", b"RSET", b"STLS", b"APOP ", b"list "]),
              st.binary(max_size=20)),
    st.binary(max_size=40),
).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b""))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(pop3_line, min_size=1, max_size=8))
def test_random_pop3_dialogues(live, lines):
    # Multi-line answers (CAPA, bare AUTH) and logins (which would slow down this
    # client address on purpose) are covered elsewhere.
    assume(not any(line.upper().split(b" ")[0] in (b"CAPA", b"AUTH", b"USER", b"PASS", b"QUIT", b"STLS")
                   for line in lines))
    with Dialog(live.pop3_port) as c:
        assert c.greeting.startswith(b"+OK")
        c.send(b"".join(line + b"\r\n" for line in lines) + b"QUIT\r\n")
        replies = c.rest()
    assert replies and all(re.match(rb"^(\+OK|-ERR)( |\r\n)", r) for r in replies), replies
    assert len(replies) <= len(lines) + 1
