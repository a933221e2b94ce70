"""``serve`` and the CLI as scripts and journald see them: one-line errors, exit codes, ``status``."""

from __future__ import annotations

import json
import smtplib
import os
import socket
import subprocess
import sys
import time

from harness import mailtui, write_config


def test_errors_stay_one_line_on_a_narrow_pipe(tmp_path):
    deep = tmp_path / ("a-long-folder-name-" * 6) / "config.toml"
    env = dict(os.environ, COLUMNS="40")
    env.pop("MAILTUI_CONFIG", None)
    res = subprocess.run([sys.executable, "-m", "mailtui", "--config", str(deep), "client", "list"],
                         capture_output=True, text=True, timeout=30, env=env)
    assert res.returncode == 2
    assert len(res.stderr.splitlines()) == 1 and str(deep) in res.stderr


def test_config_check_says_ok(tmp_path):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "data")
    res = mailtui("config", "--check", config=cfg)
    assert res.returncode == 0 and res.stdout.startswith("ok")


def test_status_of_a_stopped_server(tmp_path):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "data")
    res = mailtui("status", config=cfg)
    assert res.returncode == 3 and "not running" in res.stdout
    res = mailtui("status", "--json", config=cfg)
    assert res.returncode == 3 and json.loads(res.stdout)["running"] is False


def serve(cfg) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mailtui", "--config", str(cfg), "serve"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_status(cfg, proc, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        res = mailtui("status", "--json", config=cfg)
        if res.returncode == 0:
            return json.loads(res.stdout)
        time.sleep(0.2)
    raise AssertionError("the server never answered status")


def test_status_of_a_running_server(tmp_path):
    cfg = write_config(tmp_path / "c.toml", tmp_path / "data")
    proc = serve(cfg)
    try:
        status = wait_for_status(cfg, proc)
        assert status["running"] and status["queue"] == 0 and status["totals"]["accepted"] == 0
        assert status["scanning"] is False and status["lag"]["samples"] > 0
        protos = {li["proto"] for li in status["listeners"] if li["ok"]}
        assert {"smtp", "pop3"} <= protos
        port = next(int(li["bound"].rsplit(":", 1)[1]) for li in status["listeners"] if li["proto"] == "smtp")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.ehlo("x")
            assert smtp.mail("a@example.org")[0] == 550   # not a registered client
        text = mailtui("status", config=cfg)
        assert text.returncode == 0 and "SMTP" in text.stdout and "refused 1" in text.stdout
        assert "event-loop lag over the last " in text.stdout and " ms, max " in text.stdout
    finally:
        proc.terminate()
        proc.wait(15)
    assert proc.returncode == 0


def test_serve_exits_non_zero_when_a_listener_cannot_bind(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cfg = write_config(tmp_path / "c.toml", tmp_path / "data")
        text = cfg.read_text().replace('[pop3]\nlisten = ["127.0.0.1:0"]', f'[pop3]\nlisten = ["127.0.0.1:{port}"]')
        cfg.write_text(text)
        proc = serve(cfg)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"POP3 127.0.0.1:{port}" in lines[0] and "in use" in lines[0]
