"""``mailtui web`` in a real browser: Debian's chromium driven by Playwright, against a real ``mailtui serve``.

The terminal in the page draws on a canvas, so what the console shows is read
where the browser reads it: the websocket frames that carry the console's
output (escape sequences stripped). Keys are pressed on the page, as a user
does. Guarding the page (loopback names, its own origin, the password) is
tested with plain HTTP requests.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from harness import mailtui, write_config
from test_attach import send
from test_tmux import consoles_of, service, wait_for  # noqa: F401  (service is a fixture)

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ESCAPES = re.compile(rb"\x1b(\[[0-9;?<>=]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78cDEHM])")

pytestmark = pytest.mark.timeout(120)


class Web:
    """``mailtui web`` in the background; ``url`` is where it says it listens."""

    def __init__(self, config: Path, *args: str) -> None:
        env = dict(os.environ)
        env.pop("MAILTUI_CONFIG", None)
        self.proc = subprocess.Popen([sys.executable, "-m", "mailtui", "--config", str(config), "web", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(20)
        match = re.search(r"(https?://\S+/)", first[0] if first else "")
        if match is None:
            self.stop()
            raise AssertionError(f"mailtui web did not start: {first} {self.proc.stderr.read()}")
        self.url = match.group(1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()
        self.proc.stderr.close()


def get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def browser(tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, args=ARGS, headless=True,
            viewport={"width": 1280, "height": 800})
        try:
            yield context
        finally:
            context.close()


class Page:
    """A tab on the console: what it has been sent so far, as text, and keys to press."""

    def __init__(self, context, url: str) -> None:
        self.page = context.new_page()
        self.frames: list[bytes] = []
        self.page.on("websocket", lambda ws: ws.on("framereceived", self._frame))
        self.page.goto(url, timeout=20_000)

    def _frame(self, payload) -> None:
        self.frames.append(payload if isinstance(payload, bytes) else payload.encode())

    def text(self) -> str:
        return ESCAPES.sub(b"", b"".join(self.frames)).decode("utf-8", "replace")

    def wait_for_text(self, text: str, what: str, timeout: float = 20.0, since: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while text not in ESCAPES.sub(b"", b"".join(self.frames[since:])).decode("utf-8", "replace"):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what} ({text!r})")
            self.page.wait_for_timeout(100)   # (lets Playwright deliver the frames)

    def press(self, key: str) -> int:
        """Press ``key``; returns the frame count before it (look for its effect after that)."""
        mark = len(self.frames)
        self.page.keyboard.press(key)
        return mark


def test_the_console_in_a_browser_registers_a_refused_client(service, browser, tmp_path):  # noqa: F811
    config, smtp_port = service
    web = Web(config, "--listen", "127.0.0.1:0")
    try:
        tab = Page(browser, web.url)
        tab.wait_for_text("attached to pid", "the console to attach")
        for name in ("Connections", "Clients", "DNS", "Queue", "No connections yet"):
            assert name in tab.text()
        tab.page.mouse.click(640, 400)              # the terminal has the keyboard
        mark = tab.press("4")
        tab.wait_for_text("Next try", "the Queue panel", since=mark)
        mark = tab.press("1")
        tab.wait_for_text("Registered as", "the Connections panel", since=mark)

        assert send(smtp_port, "127.0.0.9") != "accepted"
        tab.wait_for_text("SMTP S1 from 127.0.0.9 · unregistered", "the refused connection")
        tab.wait_for_text("press r to register", "the hint")
        mark = tab.press("r")
        tab.wait_for_text("host-127-0-0-9", "the form, filled in", since=mark)
        tab.press("Enter")
        listed = wait_for(lambda: json.loads(mailtui("client", "list", "--json", config=config).stdout),
                          "the registration")
        assert [(c["name"], c["networks"]) for c in listed] == [("host-127-0-0-9", ["127.0.0.9/32"])]
        tab.page.screenshot(path=str(tmp_path / "browser.png"))
        assert len(consoles_of(config)) == 2     # `mailtui web`, and the console of the tab
    finally:
        web.stop()
    wait_for(lambda: not consoles_of(config), "the tab's console to end with the web server")


def test_the_page_is_for_loopback_names_and_its_own_origin(tmp_path):
    config = write_config(tmp_path / "mailtui.toml", tmp_path / "data")
    web = Web(config, "--listen", "127.0.0.1:0")
    try:
        port = web.url.rstrip("/").rsplit(":", 1)[1]
        assert get(web.url) == 200
        assert get(web.url, {"Host": f"localhost:{port}"}) == 200
        assert get(web.url, {"Host": f"rebound.example:{port}"}) == 403     # DNS rebinding
        ws = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
              "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
        assert get(web.url + "ws", ws | {"Origin": "http://evil.example"}) == 403
    finally:
        web.stop()


def test_serving_beyond_loopback_needs_a_password_and_gets_https(tmp_path):
    config = write_config(tmp_path / "mailtui.toml", tmp_path / "data")
    refused = mailtui("web", "--listen", "0.0.0.0:0", config=config)
    assert refused.returncode == 1 and "not a loopback address" in refused.stderr
    refused = mailtui("web", "--listen", "0.0.0.0:0", "--allow-remote", config=config)
    assert refused.returncode == 1 and "--allow-remote needs --password-file" in refused.stderr
    secret = tmp_path / "web-password"
    secret.write_text("correct horse battery\n")
    secret.chmod(0o644)
    refused = mailtui("web", "--listen", "0.0.0.0:0", "--allow-remote", "--password-file", str(secret),
                      config=config)
    assert refused.returncode == 1 and "others may read it" in refused.stderr
    secret.chmod(0o600)
    web = Web(config, "--listen", "127.0.0.2:0", "--allow-remote", "--password-file", str(secret))
    try:
        assert web.url.startswith("https://127.0.0.2:")
        import ssl

        insecure = ssl.create_default_context()
        insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=insecure))

        def status(password: str | None) -> int:
            headers = {} if password is None else \
                {"Authorization": "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()}
            try:
                with opener.open(urllib.request.Request(web.url, headers=headers), timeout=10) as response:
                    return response.status
            except urllib.error.HTTPError as exc:
                return exc.code

        assert status(None) == 401 and status("wrong password!") == 401
        assert status("correct horse battery") == 200
    finally:
        web.stop()
