"""A real ``mailtui`` in a real terminal (tmux), attached to a real ``mailtui serve``.

What a sysadmin does: the service runs; they open the console under the same
config, see a refused connection, press the keys that register it, and check
with ``mailtui client list``.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from harness import mailtui, write_config
from test_attach import send

pytestmark = [pytest.mark.timeout(90),
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def wait_for(predicate, what: str, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Tmux:
    """One tmux server of our own (its own socket), one session, one pane."""

    def __init__(self, name: str, folder: Path) -> None:
        # The pane has its final size from the start: a program that looks before a resize sees it.
        config = folder / "tmux.conf"
        config.write_text("set -g default-size 120x40\nset -g status off\n")
        self.base = ["tmux", "-L", name, "-f", str(config)]

    def run(self, *args: str) -> str:
        return subprocess.run(self.base + list(args), capture_output=True, text=True, timeout=10,
                              check=True).stdout

    def start(self, command: list[str], env: dict[str, str]) -> None:
        extra = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        # (COLUMNS and LINES from whoever started the test would override the pane's real size)
        self.run("new-session", "-d", "-x", "120", "-y", "40", "-s", "console", *extra,
                 shlex.join(["env", "-u", "COLUMNS", "-u", "LINES", *command]))

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "console")

    def keys(self, *keys: str) -> None:
        self.run("send-keys", "-t", "console", *keys)

    def alive(self) -> bool:
        result = subprocess.run(self.base + ["has-session", "-t", "console"], capture_output=True, timeout=10)
        return result.returncode == 0

    def kill(self) -> None:
        subprocess.run(self.base + ["kill-server"], capture_output=True, timeout=10)


@pytest.fixture
def service(tmp_path):
    """``mailtui serve``, as systemd runs it; yields (config path, SMTP port)."""
    config = write_config(tmp_path / "mailtui.toml", tmp_path / "data")
    env = dict(os.environ)
    env.pop("MAILTUI_CONFIG", None)
    proc = subprocess.Popen([sys.executable, "-m", "mailtui", "--config", str(config), "serve"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        status = wait_for(lambda: running_status(config), "the service to answer")
        smtp = next(li["bound"] for li in status["listeners"] if li["proto"] == "smtp")
        yield config, int(smtp.rsplit(":", 1)[1])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def running_status(config: Path) -> dict | None:
    result = mailtui("status", "--json", config=config)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_a_client_is_registered_from_a_console_attached_in_tmux(service, tmp_path):
    config, smtp_port = service
    tmux = Tmux(f"mailtui-test-{os.getpid()}", tmp_path)
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", ""), "TERM": "xterm-256color", "MAILTUI_CONFIG": ""}
    try:
        tmux.start([sys.executable, "-m", "mailtui", "--config", str(config)], env)
        wait_for(lambda: "attached to pid" in tmux.screen(), "the console to attach")
        assert send(smtp_port, "127.0.0.9") != "accepted"
        wait_for(lambda: "press r to register 127.0.0.9" in tmux.screen(), "the refused connection")

        tmux.keys("r")                    # the form, filled in for the refused address
        wait_for(lambda: "127.0.0.9/32" in tmux.screen() and "host-127-0-0-9" in tmux.screen(), "the form")
        tmux.keys("Enter")                # a valid form: Enter saves
        wait_for(lambda: "host-127-0-0-9 may now send from 127.0.0.9/32" in tmux.screen(), "the confirmation")

        listed = mailtui("client", "list", "--json", config=config)
        assert listed.returncode == 0, listed.stderr
        assert [(c["name"], c["networks"]) for c in json.loads(listed.stdout)] == \
            [("host-127-0-0-9", ["127.0.0.9/32"])]
        assert send(smtp_port, "127.0.0.9") == "accepted"

        tmux.keys("q")                    # attached: it quits at once, and the service runs on
        wait_for(lambda: not tmux.alive(), "the console to quit")
        assert running_status(config) is not None
    finally:
        tmux.kill()


def consoles_of(config: Path) -> list[int]:
    """Processes running a console on ``config``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.name.isdigit() and str(config).encode() in args and b"mailtui" in args and b"serve" not in args:
            found.append(int(entry.name))
    return found


def test_a_console_whose_terminal_goes_away_ends(service, tmp_path):
    config, _ = service
    tmux = Tmux(f"mailtui-test-{os.getpid()}-gone", tmp_path)
    try:
        tmux.start([sys.executable, "-m", "mailtui", "--config", str(config)], {"TERM": "xterm-256color"})
        wait_for(lambda: "attached to pid" in tmux.screen(), "the console to attach")
        assert len(consoles_of(config)) == 1
    finally:
        tmux.kill()                       # the terminal hangs up, as when an SSH link drops
    wait_for(lambda: not consoles_of(config), "the console to end")
    assert running_status(config) is not None
