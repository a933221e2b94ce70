"""``mailtui web``: the attached console in a browser, served by textual-serve.

Each browser tab runs its own ``mailtui --config C console --attach``, which
attaches to the running server like a console in a terminal (and waits for
it when it is not running: a tab never runs a server of its own).

The console can do everything the administrator can, so the page is guarded:

* it listens on loopback only, unless the administrator says ``--allow-remote``,
  and then only over HTTPS (the ``[tls]`` certificate, or the self-signed one
  mailtui makes) and only with HTTP basic authentication against a password
  kept in a file that only its owner may read (``--password-file``);
* on loopback, requests must name a loopback host (a page on another site
  cannot reach it through DNS rebinding);
* the websocket that drives the console must come from the page itself (its
  ``Origin`` is this server): another site open in the same browser cannot
  drive it, even with the password cached.

The SSH tunnel (``ssh -L 8080:127.0.0.1:8080 host``) is the way to use it
from elsewhere without opening anything.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import os
import shlex
import ssl
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import urlsplit

from ..config import Config, ConfigError, parse_endpoint
from .errors import CliError
from .loop import give_way, install_signal_handlers, run

DEFAULT_LISTEN = "127.0.0.1:8080"
REALM = "mailtui"


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def read_password(path: str) -> str:
    """The first line of ``path``, a file no one but its owner may read."""
    from ..admin.passwords import PasswordError, check_strength

    try:
        mode = os.stat(path).st_mode
        with open(path, encoding="utf-8") as fh:
            password = fh.readline().rstrip("\r\n")
    except OSError as exc:
        raise CliError(f"--password-file {path}: {exc.strerror}") from None
    if mode & 0o077:
        raise CliError(f"--password-file {path}: others may read it (chmod 600 {shlex.quote(path)})")
    try:
        check_strength(password)
    except PasswordError as exc:
        raise CliError(f"--password-file {path}: {exc}") from None
    return password


def host_of(netloc: str) -> str:
    """The host of a ``Host`` header or an origin's netloc, without the port."""
    return urlsplit(f"//{netloc}").hostname or ""


class Guard:
    """What every request must show before it reaches textual-serve."""

    def __init__(self, *, password: str | None, loopback_only: bool) -> None:
        self.password = password
        self.loopback_only = loopback_only

    def refusal(self, request: Any) -> tuple[int, str] | None:
        """(status, why) when ``request`` is refused, None when it may go on."""
        if self.loopback_only and not is_loopback(host_of(request.host)):
            return 403, "this console answers to loopback names only (127.0.0.1, localhost)"
        if self.password is not None and not self.authorized(request.headers.get("Authorization", "")):
            return 401, "the mailtui console needs its password"
        origin = request.headers.get("Origin")
        if request.path == "/ws" and origin is not None and urlsplit(origin).netloc != request.host:
            return 403, "the console's websocket is for its own page only"
        return None

    def authorized(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic" or self.password is None:
            return False
        try:
            _, _, given = base64.b64decode(encoded, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(given.encode(), self.password.encode())


def make_server(command: str, guard: Guard, title: str):
    """A textual-serve Server behind ``guard``, whose page finds its websocket wherever it is reached."""
    from aiohttp import web
    from textual_serve.server import Server

    @web.middleware
    async def check(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        refused = guard.refusal(request)
        if refused is None:
            return await handler(request)
        status, why = refused
        headers = {"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'} if status == 401 else None
        return web.Response(status=status, text=why + "\n", headers=headers)

    class ConsoleServer(Server):
        async def _make_app(self) -> web.Application:
            app = await super()._make_app()
            app.middlewares.append(check)
            return app

        async def handle_index(self, request: web.Request) -> Any:
            # textual-serve builds the websocket's address from one fixed URL; through a
            # tunnel or a proxy the browser knows this server under another name or port.
            self.public_url = f"{request.scheme}://{request.host}"
            return await super().handle_index(request)

        async def on_startup(self, app: web.Application) -> None:
            pass

    return ConsoleServer(command, title=title)


def tab_command(config: Config) -> str:
    """What each browser tab runs: this mailtui, this config, attached only."""
    parts = [sys.executable, "-m", "mailtui"]
    if config.source not in ("embedded defaults", "<mapping>"):
        parts += ["--config", str(Path(config.source).resolve())]
    # exec: the console is the web server's own child, and notices when that is gone
    return "exec " + shlex.join(parts + ["console", "--attach"])


def check_exposure(host: str, allow_remote: bool, password_file: str | None) -> None:
    if not is_loopback(host) and not allow_remote:
        raise CliError(f"--listen {host}: not a loopback address; the console can do everything the "
                       "administrator can, so say --allow-remote (with --password-file) to serve it "
                       "beyond this machine, or use an SSH tunnel")
    if allow_remote and not password_file:
        raise CliError("--allow-remote needs --password-file: the console is never served to other "
                       "machines without a password")


async def serve_web(config: Config, listen: str, *, allow_remote: bool = False,
                    password_file: str | None = None, stop: asyncio.Event | None = None) -> None:
    from aiohttp import web

    try:
        endpoint = parse_endpoint(listen, "--listen")
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    check_exposure(endpoint.host, allow_remote, password_file)
    password = read_password(password_file) if password_file else None
    context: ssl.SSLContext | None = None
    if allow_remote:
        from ..server.tls import server_context
        context = server_context(config)
    guard = Guard(password=password, loopback_only=not allow_remote)
    server = make_server(tab_command(config), guard, title=f"mailtui {config.server.hostname}")
    runner = web.AppRunner(await server._make_app(), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, endpoint.host, endpoint.port, ssl_context=context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise CliError(f"cannot listen on {endpoint}: {exc.strerror or exc}") from None
    stop = stop or asyncio.Event()
    install_signal_handlers(asyncio.get_running_loop(), stop)
    bound = site._server.sockets[0].getsockname()  # type: ignore[union-attr]
    scheme = "https" if context else "http"
    host = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    print(f"mailtui web: the console of {config.server.data_dir} on {scheme}://{host}:{bound[1]}/ "
          f"(one attached console per tab; Ctrl+C stops)", flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def web_command(config: Config, listen: str, allow_remote: bool, password_file: str | None) -> None:
    give_way()   # it and the consoles of its tabs (which inherit this) only watch the server
    run(serve_web(config, listen, allow_remote=allow_remote, password_file=password_file))
