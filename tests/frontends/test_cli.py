"""The command line: config errors, admin commands offline and against a live server."""

from __future__ import annotations

import smtplib
from pathlib import Path

import pytest
from harness import RunningServer, mailtui, make_config, write_config


@pytest.mark.parametrize("body, key", [
    ("[smtp]\nlisten = [\"127.0.0.1:25\"]\nmax_mesage_size = 5\n", "smtp.max_mesage_size: unknown key"),
    ("[smtp]\nmax_message_size = \"big\"\n", "smtp.max_message_size: expected an integer"),
    ("[smtp]\nlisten = [\"localhost:25\"]\n", "smtp.listen: 'localhost' is not an IP address"),
    ("[smtp]\nlisten = [\"127.0.0.1:99999\"]\n", "smtp.listen: bad port"),
    ("[dns]\nnameservers = \"8.8.8.8\"\n", "dns.nameservers: expected a list of strings"),
    ("[policy]\naccept_unregistered_for_local = \"yes\"\n", "policy.accept_unregistered_for_local"),
    ("[bogus]\nx = 1\n", "bogus: unknown section"),
    ("[server\n", "TOML syntax error"),
    ("[delivery]\nretry_intervals = []\n", "delivery.retry_intervals"),
])
def test_config_errors_are_one_line_naming_the_key(tmp_path, body, key):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(body)
    res = mailtui("client", "list", config=cfg)
    assert res.returncode == 2
    assert key in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert "Traceback" not in res.stderr


def test_missing_config_file(tmp_path):
    res = mailtui("client", "list", config=tmp_path / "nope.toml")
    assert res.returncode == 2 and "not found" in res.stderr


def test_sample_config_is_valid_and_complete():
    from dataclasses import fields

    from mailtui.config import Config, load

    root = Path(__file__).resolve().parents[2]
    text = (root / "sample_config.toml").read_text()
    cfg = load(root / "sample_config.toml")
    for section in fields(Config):
        if section.name == "source":
            continue
        for f in fields(getattr(cfg, section.name)):
            assert f"\n{f.name} = " in text, f"{section.name}.{f.name} missing from sample_config.toml"


def test_offline_admin_commands(tmp_path):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "data")
    assert mailtui("client", "add", "office", "--network", "192.0.2.0/24", "--network", "2001:db8::/32",
                   config=cfg).returncode == 0
    res = mailtui("client", "list", config=cfg)
    assert "office" in res.stdout and "192.0.2.0/24" in res.stdout
    bad = mailtui("client", "add", "lab", "--network", "192.0.2.1/24", config=cfg)
    assert bad.returncode == 1 and "bad network" in bad.stderr and len(bad.stderr.splitlines()) == 1
    dup = mailtui("client", "add", "office", "--network", "198.51.100.0/24", config=cfg)
    assert dup.returncode == 1 and "already exists" in dup.stderr

    res = mailtui("mailbox", "add", "Alice@LocalHost", "--password-stdin", config=cfg, stdin="a good passphrase\n")
    assert res.returncode == 0, res.stderr
    weak = mailtui("mailbox", "add", "bob@localhost", "--password-stdin", config=cfg, stdin="\n")
    assert weak.returncode == 1 and "password is empty" in weak.stderr
    foreign = mailtui("mailbox", "add", "eve@elsewhere.test", "--password-stdin", config=cfg, stdin="whatever123\n")
    assert foreign.returncode == 1 and "not a local domain" in foreign.stderr
    assert "alice@localhost" in mailtui("mailbox", "list", config=cfg).stdout
    state = (tmp_path / "data" / "state.json").read_text()
    assert "a good passphrase" not in state and "scrypt$" in state

    assert mailtui("client", "remove", "office", config=cfg).returncode == 0
    assert mailtui("mailbox", "remove", "alice@localhost", config=cfg).returncode == 0
    gone = mailtui("client", "remove", "office", config=cfg)
    assert gone.returncode == 1 and "no client" in gone.stderr
    assert "empty" in mailtui("queue", "list", config=cfg).stdout


def test_usage_errors_are_one_line(tmp_path):
    res = mailtui("client", "add", "x")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_admin_commands_reach_the_running_server(tmp_path):
    data = tmp_path / "data"
    cfg = write_config(tmp_path / "c.toml", data)
    # The message must stay queued while five CLI processes start one after another: with
    # the harness's 0.3 s retries it bounced after its third attempt on a loaded machine.
    srv = RunningServer(make_config(data, delivery={"retry_intervals": [60.0]})).start()
    try:
        with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=10) as c:
            c.ehlo("client.test")
            assert c.mail("a@example.org")[0] == 550
        res = mailtui("client", "add", "loop", "--network", "127.0.0.0/8", config=cfg)
        assert res.returncode == 0, res.stderr
        # takes effect without a restart
        with smtplib.SMTP("127.0.0.1", srv.smtp_port, timeout=10) as c:
            c.ehlo("client.test")
            assert c.mail("a@example.org")[0] == 250
            assert c.rcpt("far@unreachable.test")[0] == 250
            assert c.data(b"Subject: queued\r\n\r\nbody\r\n")[0] == 250
        res = mailtui("mailbox", "add", "carol@example.test", "--password-stdin", config=cfg,
                      stdin="another passphrase\n")
        assert res.returncode == 0, res.stderr
        assert srv.call(srv.core.registry.has_mailbox, "carol@example.test")
        # the server's own writes and the CLI's do not lose each other
        srv.wait_for(lambda: "carol@example.test" in (data / "state.json").read_text(), what="state.json")
        listing = srv.wait_for(lambda: (r := mailtui("queue", "list", config=cfg)).stdout.count("far@") and r,
                               timeout=15, what="deferred message in queue list")
        assert "far@unreachable.test" in listing.stdout
        msg_id = srv.core.queue.items()[0].id
        assert mailtui("queue", "flush", config=cfg).returncode == 0
        res = mailtui("queue", "remove", msg_id, config=cfg)
        assert res.returncode == 0, res.stderr
        srv.wait_for(lambda: len(srv.core.queue) == 0, what="removed message to leave the queue")
        # server-side lock: a second server cannot start on the same data_dir
        res = mailtui("serve", config=cfg, timeout=20)
        assert res.returncode == 1 and "another mailtui server" in res.stderr
    finally:
        srv.stop()
    res = mailtui("client", "list", config=cfg)
    assert "loop" in res.stdout


def test_queue_list_json_notes_an_unfinished_scan_on_stderr(capsys):
    from mailtui.frontends.cli import print_queue

    print_queue([], as_json=True, scanning=True)
    captured = capsys.readouterr()
    assert captured.out.strip() == "[]"
    assert captured.err.startswith("note: the server is still scanning its spool")
