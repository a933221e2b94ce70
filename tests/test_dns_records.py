"""``mailtui dns`` and ``mailtui dkim rotate`` against a real DNS (dnsmasq), server stopped and running.

The world publishes some of example.test's records as mailtui suggests them,
some differently and leaves some out; other.test gets the opposite mix. The
mail host mail.example.test is 127.0.0.5, with a PTR back to it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dnsworld import DNSMASQ, DnsWorld, free_port
from harness import RunningServer
from tlsworld import PolicyServer, TestCA

from mailtui.config import load
from mailtui.dns.resolver import Resolver
from mailtui.mailauth.dkimkeys import DkimKeys
from mailtui.mailauth.records import Record, domain_report, sts_policy, txt_strings

HOST = "mail.example.test"
HOST_IP = "127.0.0.5"


def other_key_record() -> str:
    from mailtui.mailauth.dkimkeys import DkimKey, new_private_key_pem

    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(new_private_key_pem(), password=None)
    return DkimKey("other.test", "mailtui", key).record


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("dnsrecords") / "data"


@pytest.fixture(scope="module")
def world(data_dir):
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed")
    ours = DkimKeys(data_dir).active("example.test")            # made before the server ever ran
    w = DnsWorld(
        mx=(("example.test", HOST, 10), ("other.test", "mx.elsewhere.test", 10)),
        hosts=((HOST, HOST_IP), ("mta-sts.example.test", "127.0.0.6")),
        null_mx=(),
        txt=(("example.test", "v=spf1 ip4:127.0.0.99 -all"),               # does not authorise 127.0.0.5
             (ours.record_name, ours.record),
             ("_mta-sts.example.test", "v=STSv1; id=abc123"),
             ("other.test", f"v=spf1 a:{HOST} -all"),                     # does: present, if not verbatim
             ("mailtui._domainkey.other.test", other_key_record()),
             ("_dmarc.other.test", "v=DMARC1; p=reject; rua=mailto:d@other.test"),
             ("_mta-sts.other.test", "v=STSv1; id=bad id")),
        srv=(("_imaps._tcp.example.test", HOST, 993, 0, 1), ("_submission._tcp.example.test", HOST, 2525, 0, 1)),
    ).start()
    try:
        yield w
    finally:
        w.close()


@pytest.fixture(scope="module")
def config_file(world, data_dir, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "mailtui.toml"
    path.write_text(f'[server]\nhostname = "{HOST}"\ndata_dir = "{data_dir}"\n'
                    f'local_domains = ["localhost", "example.test", "other.test", "third.test"]\n'
                    f'[smtp]\nlisten = ["127.0.0.1:0"]\n[pop3]\nlisten = ["127.0.0.1:0"]\n'
                    f'[dns]\nnameservers = ["{world.endpoint}"]\ntimeout = 1.0\n'
                    f'[mta_sts]\nfetch_timeout = 1.0\n')
    return path


def mailtui(config: Path, *args: str, columns: int = 40) -> subprocess.CompletedProcess:
    env = dict(os.environ, COLUMNS=str(columns))
    env.pop("MAILTUI_CONFIG", None)
    return subprocess.run([sys.executable, "-m", "mailtui", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=60, env=env)


def status_of(lines: list[str], start: str) -> str:
    [line] = [line for line in lines if line.startswith(start)]
    return line.split("\t; ", 1)[1].split(":")[0].split(" - ")[0]


def test_txt_values_are_split_into_strings_of_at_most_255_bytes():
    import re

    value = "v=DKIM1; k=rsa; p=" + "A" * 600 + '"\\ é' * 100
    text = txt_strings(value)
    quoted = re.findall(r'"((?:[^"\\]|\\.)*)"( |$)', text)
    assert " ".join(f'"{q}"' for q, _ in quoted) == text              # nothing but quoted strings
    parts = [re.sub(r"\\(.)", r"\1", q) for q, _ in quoted]
    assert len(parts) == 5 and all(len(p.encode()) <= 255 for p in parts)        # 1118 bytes
    assert "".join(parts) == value
    assert txt_strings("") == '""'
    assert Record("a.test", "TXT", "x").zone_line() == 'a.test.\t3600\tIN\tTXT\t"x"'


def test_mailtui_dns_checks_every_record(config_file, data_dir):
    res = mailtui(config_file, "dns", "example.test")
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert status_of(lines, "example.test.\t3600\tIN\tMX\t10 mail.example.test.") == "present"
    assert status_of(lines, 'example.test.\t3600\tIN\tTXT\t"v=spf1 mx -all"') == "different"
    assert any(";   the DNS has: \"v=spf1 ip4:127.0.0.99 -all\"" in line for line in lines)
    assert "fail for 127.0.0.5" in next(line for line in lines if line.startswith('example.test.\t3600\tIN\tTXT'))
    key = DkimKeys(data_dir).active("example.test")
    [dkim_line] = [line for line in lines if line.startswith("mailtui._domainkey.example.test.")]
    assert status_of(lines, "mailtui._domainkey.example.test.") == "present"
    assert dkim_line.split("\t")[4] == txt_strings(key.record)          # one line, split in quoted strings
    assert max(len(p) for p in dkim_line.split("\t")[4].split(" ")) <= 255 + 2 and len(dkim_line) > 400
    assert status_of(lines, "_dmarc.example.test.") == "missing"
    assert status_of(lines, "_imaps._tcp.example.test.\t3600\tIN\tSRV\t0 1 993 mail.example.test.") == "present"
    assert status_of(lines, "_submission._tcp.example.test.") == "different"
    assert status_of(lines, "_pop3s._tcp.example.test.") == "missing"
    assert "standard port" in next(line for line in lines if line.startswith("_imap._tcp."))
    assert status_of(lines, "_mta-sts.example.test.") == "present"
    assert status_of(lines, f"{HOST}.\t3600\tIN\tA\t{HOST_IP}") == "present"
    assert status_of(lines, "5.0.0.127.in-addr.arpa.\t3600\tIN\tPTR\tmail.example.test.") == "present"
    _, sts_id = sts_policy(HOST)
    assert f'"v=STSv1; id={sts_id}"' in res.stdout and ";   mx: mail.example.test" in res.stdout
    # Plain text: no line was wrapped at the 40 columns the terminal claims.
    assert not any(line.startswith((" ", "\t")) for line in lines)
    assert all(line == "" or line.startswith(";") or line.count("\t") >= 4 for line in lines)


def test_mailtui_dns_json_and_the_other_domain(config_file, data_dir):
    assert not (data_dir / "dkim" / "other.test").exists()
    res = mailtui(config_file, "dns", "--json")                # no server has run: the command makes the keys
    assert res.returncode == 0, res.stderr
    reports = {r["domain"]: r for r in json.loads(res.stdout)}
    assert set(reports) == {"example.test", "other.test", "third.test"}     # localhost has no records
    assert (data_dir / "dkim" / "other.test" / "mailtui.pem").exists()
    other = {(r["name"], r["type"]): r for r in reports["other.test"]["records"]}
    assert other[("other.test", "MX")]["status"] == "different"
    assert other[("other.test", "MX")]["found"] == ["10 mx.elsewhere.test"]
    assert other[("other.test", "TXT")]["status"] == "present"               # another text, same effect
    assert other[("mailtui._domainkey.other.test", "TXT")]["status"] == "different"
    assert other[("_dmarc.other.test", "TXT")]["status"] == "present"
    assert other[("_dmarc.other.test", "TXT")]["detail"] == "p=reject"
    assert other[("_mta-sts.other.test", "TXT")]["status"] == "different"
    assert reports["other.test"]["mta_sts_policy"]["status"] == "missing"


def test_errors_are_one_line(config_file):
    res = mailtui(config_file, "dns", "nowhere.test", columns=200)
    assert res.returncode == 1 and "nowhere.test is not a local domain" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_with_the_server_running_keys_are_shared_and_rotation_shows(config_file, data_dir):
    config = load(config_file)
    (data_dir / "dkim" / "third.test").mkdir(parents=True, exist_ok=True)
    for path in (data_dir / "dkim" / "third.test").iterdir():
        path.unlink()                                              # third.test has no key yet
    server = RunningServer(config).start()
    try:
        first = mailtui(config_file, "dns", "third.test")          # makes third.test's key while it runs
        assert first.returncode == 0, first.stderr
        key = DkimKeys(data_dir).active("third.test")
        assert txt_strings(key.record) in first.stdout
        again = mailtui(config_file, "dns", "third.test")
        assert txt_strings(key.record) in again.stdout             # the same key, not a new one
        rotated = mailtui(config_file, "dkim", "rotate", "third.test")
        assert rotated.returncode == 0, rotated.stderr
        new = DkimKeys(data_dir).active("third.test")
        assert new.selector.startswith("mailtui-") and new.selector in rotated.stdout
        [line] = [line for line in rotated.stdout.splitlines() if not line.startswith(";")]
        assert line == f"{new.record_name}.\t3600\tIN\tTXT\t{txt_strings(new.record)}"
        after = mailtui(config_file, "dns", "third.test")
        assert "DKIM key that signs now" in next(line for line in after.stdout.splitlines()
                                                 if line.startswith(f"{new.selector}._domainkey"))
        assert "rotated out" in next(line for line in after.stdout.splitlines()
                                     if line.startswith("mailtui._domainkey.third.test"))
    finally:
        server.stop()


async def test_the_policy_file_check_fetches_it(world, data_dir, tmp_path):
    ca = TestCA(tmp_path)
    port = free_port(("127.0.0.6",))
    config = load_with_ca(world, data_dir, tmp_path, ca.ca_file)
    keys = DkimKeys(data_dir)
    resolver = Resolver((world.endpoint,), 1.0)

    async def policy_status(body: str) -> tuple[str, str]:
        server = await PolicyServer("127.0.0.6", port, ca.server_context("mta-sts.example.test"),
                                    PolicyServer.ok(body)).start()
        try:
            report = await domain_report(config, "example.test", keys.keys("example.test"), "mailtui", resolver,
                                         https_port=port, fetch_timeout=2)
        finally:
            await server.stop()
        return report.policy_check.status, report.policy_check.note

    assert await policy_status(sts_policy(HOST)[0]) == ("present", "mode testing")
    status, note = await policy_status("version: STSv1\nmode: enforce\nmx: mx.elsewhere.test\nmax_age: 60\n")
    assert status == "different" and HOST in note
    status, note = await policy_status("not a policy")
    assert status == "missing" and "colon" in note


def load_with_ca(world, data_dir, tmp_path, ca_file: str):
    path = tmp_path / "ca.toml"
    path.write_text(f'[server]\nhostname = "{HOST}"\ndata_dir = "{data_dir}"\n'
                    f'local_domains = ["example.test"]\n[dns]\nnameservers = ["{world.endpoint}"]\n'
                    f'[mta_sts]\nca_file = "{ca_file}"\n')
    return load(path)


def test_rotate_refuses_other_domains(config_file):
    res = mailtui(config_file, "dkim", "rotate", "elsewhere.test", columns=200)
    assert res.returncode == 1 and "not a local domain" in res.stderr
