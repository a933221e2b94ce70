"""The ``mailtui`` command line.

Admin commands work whether or not the server runs: with the server up they
go through its control socket; with it down they open the data directory
directly (holding its lock, so a server cannot start halfway through).
Every failure is one line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
import time
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

from .. import __version__
from ..config import Config, ConfigError, load
from .errors import CliError

out = Console(highlight=False)


def say_error(text: str) -> None:
    """One line on stderr, whatever its width or kind (a terminal, journald, a pipe)."""
    print(" ".join(str(text).split()), file=sys.stderr, flush=True)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        say_error(f"{self.prog}: {message} (try '{self.prog} --help')")
        raise SystemExit(2)


def build_parser() -> Parser:
    p = Parser(prog="mailtui", description="A small mail server you run and watch in a terminal.")
    p.add_argument("--config", metavar="FILE", help="TOML config file (default: $MAILTUI_CONFIG, "
                                                    "else embedded defaults)")
    p.add_argument("--version", action="version", version=f"mailtui {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    _add_run_commands(sub)
    _add_client_commands(sub)
    _add_mailbox_commands(sub)
    _add_queue_commands(sub)
    _add_dns_commands(sub)
    return p


def _add_run_commands(sub) -> None:
    """The commands that run or look at the server: console, serve, web, demo, config, status."""
    console = sub.add_parser("console", help="open the console (the default): attached to the running server, "
                                             "or running one of its own")
    console.add_argument("--attach", action="store_true",
                         help="only attach to a running server, never run one (waits for it)")
    sub.add_parser("serve", help="run the server headless, printing events")
    web = sub.add_parser("web", help="serve the attached console to a browser (one console per tab)")
    web.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT",
                     help="where to listen (default 127.0.0.1:8080; loopback only unless --allow-remote)")
    web.add_argument("--allow-remote", action="store_true",
                     help="allow a non-loopback --listen: HTTPS, and --password-file is required")
    web.add_argument("--password-file", metavar="FILE",
                     help="HTTP basic authentication with the password on the first line of FILE (mode 600)")
    demo = sub.add_parser("demo", help="open the console on a self-contained loopback world")
    demo.add_argument("--headless", action="store_true", help="print events instead of opening the console")
    demo.add_argument("--seconds", type=float, default=0,
                      help="stop this many seconds after every kind of traffic was shown once (0: run until quit)")
    cfg = sub.add_parser("config", help="print the effective configuration")
    cfg.add_argument("--check", action="store_true", help="only validate; print ok on success")
    status = sub.add_parser("status", help="listeners, totals and queue size of the running server")
    status.add_argument("--json", action="store_true")


def _actions(sub, name: str, text: str):
    """A command whose ACTION is required (``mailtui client add``, ``mailtui queue list``, ...)."""
    command = sub.add_parser(name, help=text)
    return command.add_subparsers(dest="action", metavar="ACTION", required=True, parser_class=Parser)


def _add_client_commands(sub) -> None:
    csub = _actions(sub, "client", "registered clients (networks allowed to send)")
    c_add = csub.add_parser("add", help="register a client")
    c_add.add_argument("name")
    c_add.add_argument("--network", action="append", required=True, metavar="CIDR",
                       help="network (repeatable), e.g. 192.0.2.0/24 or 2001:db8::/32")
    c_add.add_argument("--note", default="")
    c_edit = csub.add_parser("edit", help="change a client")
    c_edit.add_argument("name")
    c_edit.add_argument("--rename", metavar="NEW")
    c_edit.add_argument("--network", action="append", metavar="CIDR", help="replaces the networks")
    c_edit.add_argument("--note")
    c_list = csub.add_parser("list", help="list clients")
    c_list.add_argument("--json", action="store_true")
    c_rm = csub.add_parser("remove", help="remove a client")
    c_rm.add_argument("name")


def _add_mailbox_commands(sub) -> None:
    msub = _actions(sub, "mailbox", "local mailboxes (accounts)")
    for name, text in (("add", "create a mailbox"), ("passwd", "set a mailbox's password")):
        m = msub.add_parser(name, help=text)
        m.add_argument("address")
        m.add_argument("--password-stdin", action="store_true",
                       help="read the password from standard input (prompted when it is a terminal)")
    m_list = msub.add_parser("list", help="list mailboxes")
    m_list.add_argument("--json", action="store_true")
    m_rm = msub.add_parser("remove", help="remove a mailbox (its messages stay on disk)")
    m_rm.add_argument("address")


def _add_queue_commands(sub) -> None:
    qsub = _actions(sub, "queue", "the remote-delivery queue")
    q_list = qsub.add_parser("list", help="list queued messages (like mailq)")
    q_list.add_argument("--json", action="store_true")
    q_show = qsub.add_parser("show", help="show one queued message")
    q_show.add_argument("id")
    q_flush = qsub.add_parser("flush", help="make queued messages due now")
    q_flush.add_argument("id", nargs="?")
    q_rm = qsub.add_parser("remove", help="delete a queued message (no bounce)")
    q_rm.add_argument("id")
    q_b = qsub.add_parser("bounce", help="give up on a message now and bounce it to its sender")
    q_b.add_argument("id")


def _add_dns_commands(sub) -> None:
    dns = sub.add_parser("dns", help="the DNS records to publish for the local domains, checked against the DNS")
    dns.add_argument("domain", nargs="?", help="one local domain (default: every one but localhost)")
    dns.add_argument("--json", action="store_true")
    ksub = _actions(sub, "dkim", "DKIM signing keys")
    k_rot = ksub.add_parser("rotate", help="make a new key under a new selector and print its record")
    k_rot.add_argument("domain")


# -- admin plumbing --------------------------------------------------------------------

def admin_call(config: Config, op: str, **args: Any) -> Any:
    """Run one admin operation on the live server if it runs, else on the files."""
    from ..admin.control import ControlError, call
    from ..admin.verbs import Admin, AdminError
    from ..server.core import DataDirLock, open_state

    lock = DataDirLock(config.server.data_dir)
    if not lock.acquire():
        try:
            return call(config.server.data_dir, op, **args)
        except ControlError as exc:
            raise CliError(str(exc)) from None
    try:
        problems: list[str] = []
        store, registry, maildirs, queue, _ = open_state(config, on_problem=problems.append)
        for text in problems:
            say_error(f"warning: {text}")
        admin = Admin(registry=registry, queue=queue, maildirs=maildirs)

        async def run() -> Any:
            try:
                return await admin.call(op, args)
            finally:
                store.close()
        try:
            return asyncio.run(run())
        except AdminError as exc:
            raise CliError(str(exc)) from None
    finally:
        lock.release()


def read_password(address: str, from_stdin: bool) -> str:
    if sys.stdin.isatty():
        first = getpass.getpass(f"Password for {address}: ")
        second = getpass.getpass("Again: ")
        if first != second:
            raise CliError("the passwords do not match")
        return first
    line = sys.stdin.readline()
    return line.rstrip("\r\n")


def _when(ts: float) -> str:
    if not ts:
        return "-"
    delta = ts - time.time()
    if abs(delta) < 1:
        return "now"
    span = abs(delta)
    text = f"{span:.0f}s" if span < 120 else f"{span / 60:.0f}m" if span < 7200 else f"{span / 3600:.1f}h"
    return f"in {text}" if delta > 0 else f"{text} ago"


def print_rows(rows: list[dict], as_json: bool, columns: list[tuple[str, str]], empty: str) -> None:
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        out.print(empty)
        return
    table = Table(box=None, header_style="bold")
    for _, title in columns:
        table.add_column(title)
    for row in rows:
        table.add_row(*[str(row.get(key, "")) for key, _ in columns])
    out.print(table)


def print_queue(rows: list[dict], as_json: bool, scanning: bool = False) -> None:
    note = "the server is still scanning its spool at start: messages it has not reached are not listed"
    if as_json:
        print(json.dumps(rows, indent=2))
        if scanning:
            say_error(f"note: {note}")
        return
    if not rows:
        out.print(f"Mail queue is empty{f' ({note})' if scanning else ''}", markup=False)
        return
    for row in rows:
        arrived = time.strftime("%a %b %d %H:%M:%S", time.localtime(row["arrival"]))
        out.print(f"[bold]{row['id']}[/]  {row['size']:>8}  {arrived}  <{row['sender']}>  "
                  f"attempts {row['attempts']}, next {_when(row['next_attempt'])}", highlight=False)
        if row.get("last_error"):
            out.print(f"    ({row['last_error']})", markup=False)
        for r in row["recipients"]:
            out.print(f"    {r['address']:<40} {r['state']}", markup=False)
    out.print(f"-- {len(rows)} message(s) in the queue{f' ({note})' if scanning else ''}", markup=False)


# -- commands ----------------------------------------------------------------------------

def cmd_client(config: Config, args) -> None:
    if args.action == "add":
        res = admin_call(config, "client_add", name=args.name, networks=args.network, note=args.note)
        out.print(f"client {res['name']} registered: {', '.join(res['networks'])}", markup=False)
    elif args.action == "edit":
        res = admin_call(config, "client_edit", name=args.name, new_name=args.rename,
                         networks=args.network, note=args.note)
        out.print(f"client {res['name']} updated: {', '.join(res['networks'])}", markup=False)
    elif args.action == "list":
        rows = admin_call(config, "client_list")
        for row in rows:
            row["networks_text"] = ", ".join(row["networks"])
        print_rows(rows, args.json, [("name", "NAME"), ("networks_text", "NETWORKS"), ("note", "NOTE")],
                   "No registered clients (only authenticated sessions may send)")
    elif args.action == "remove":
        admin_call(config, "client_remove", name=args.name)
        out.print(f"client {args.name} removed", markup=False)


def cmd_mailbox(config: Config, args) -> None:
    if args.action in ("add", "passwd"):
        from ..admin.passwords import PasswordError, check_strength
        from ..admin.registry import RegistryError, normalize_mailbox

        try:  # validate before asking for a password
            address = normalize_mailbox(args.address, config.server.local_domains)
        except RegistryError as exc:
            raise CliError(str(exc)) from None
        password = read_password(address, args.password_stdin)
        try:
            check_strength(password)
        except PasswordError as exc:
            raise CliError(str(exc)) from None
        res = admin_call(config, "mailbox_add", address=address, password=password,
                         replace=args.action == "passwd")
        out.print(f"mailbox {res['address']} {'created' if args.action == 'add' else 'updated'}", markup=False)
    elif args.action == "list":
        rows = admin_call(config, "mailbox_list")
        print_rows(rows, args.json, [("address", "ADDRESS"), ("messages", "MESSAGES")], "No mailboxes")
    elif args.action == "remove":
        admin_call(config, "mailbox_remove", address=args.address)
        out.print(f"mailbox {args.address} removed (its messages stay on disk)", markup=False)


def cmd_queue(config: Config, args) -> None:
    if args.action == "list":
        rows = admin_call(config, "queue_list")
        print_queue(rows, args.json, admin_call(config, "queue_status")["scanning"])
    elif args.action == "show":
        row = admin_call(config, "queue_show", msg_id=args.id)
        print_queue([row], False)
        out.print()
        print(row["text"])
    elif args.action == "flush":
        res = admin_call(config, "queue_flush", msg_id=args.id)
        out.print(f"{res['flushed']} message(s) due now")
    elif args.action == "remove":
        res = admin_call(config, "queue_remove", msg_id=args.id)
        out.print(f"removed {res['removed']}")
    elif args.action == "bounce":
        res = admin_call(config, "queue_bounce", msg_id=args.id)
        out.print(f"bounced {res['bounced']}")


def cmd_config(config: Config, args) -> None:
    if args.check:
        out.print(f"ok: {config.source}", markup=False, soft_wrap=True)
        return
    from .config_dump import dump

    print(dump(config))


def cmd_status(config: Config, args) -> int:
    """Exit 0 and the figures when the server runs; 3 (as ``systemctl status``) when it does not."""
    from ..admin.control import ControlError, call
    from ..server.core import DataDirLock

    lock = DataDirLock(config.server.data_dir)
    if lock.acquire():
        lock.release()
        if args.json:
            print(json.dumps({"running": False, "data_dir": str(config.server.data_dir)}))
        else:
            out.print(f"mailtui is not running (data in {config.server.data_dir})", markup=False, soft_wrap=True)
        return 3
    try:
        status = call(config.server.data_dir, "status")
    except ControlError as exc:
        raise CliError(str(exc)) from None
    if args.json:
        print(json.dumps({"running": True} | status, indent=2))
    else:
        print_status(status)
    return 0


def print_status(status: dict) -> None:
    totals = status["totals"]
    up = _when(totals["started"]).replace(" ago", "")
    out.print(f"mailtui {status['version']} running (pid {status['pid']}, up {up}) as {status['hostname']}",
              markup=False, soft_wrap=True)
    out.print(f"  config {status['config']}, data in {status['data_dir']}", markup=False, soft_wrap=True)
    for li in status["listeners"]:
        where = li["bound"] or li["address"]
        state = "listening" if li["ok"] else f"FAILED: {li['error']}"
        out.print(f"  {li['proto'].upper():<10} {where:<24} {state}", markup=False, soft_wrap=True)
    out.print(f"  accepted {totals['accepted']}, refused {totals['refused']}, delivered {totals['delivered']}, "
              f"deferred {totals['deferred']}, bounced {totals['bounced']}; queue {status['queue']}"
              + (" (spool scan still running)" if status.get("scanning") else ""), markup=False, soft_wrap=True)
    lag = status.get("lag")
    if lag and lag.get("samples"):
        out.print(f"  event-loop lag over the last {lag['period_s']:.0f}s: p99 {lag['p99_ms']:.1f} ms, "
                  f"max {lag['max_ms']:.1f} ms", markup=False, soft_wrap=True)


def cmd_dns(config: Config, args) -> None:
    from .dnsrecords import run_dns, run_rotate

    if args.command == "dkim":
        run_rotate(config, args.domain)
    else:
        run_dns(config, args.domain, as_json=args.json)


def cmd_serve(config: Config) -> None:
    from .serve import serve

    serve(config)


def cmd_console(config: Config, attach_only: bool = False) -> None:
    from .console.runner import run_console

    run_console(config, attach_only=attach_only)


def cmd_web(config: Config, args) -> None:
    from .web import web_command

    web_command(config, args.listen, args.allow_remote, args.password_file)


def cmd_demo(config: Config, args) -> None:
    from .demo import run_demo

    run_demo(headless=args.headless, seconds=args.seconds)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = load(args.config) if args.command != "demo" else None
        command = args.command or "console"
        if command == "serve":
            cmd_serve(config)
        elif command == "console":
            cmd_console(config, getattr(args, "attach", False))
        elif command == "demo":
            cmd_demo(config, args)
        elif command == "web":
            cmd_web(config, args)
        elif command == "config":
            cmd_config(config, args)
        elif command == "client":
            cmd_client(config, args)
        elif command == "mailbox":
            cmd_mailbox(config, args)
        elif command == "queue":
            cmd_queue(config, args)
        elif command == "status":
            return cmd_status(config, args)
        elif command in ("dns", "dkim"):
            cmd_dns(config, args)
    except ConfigError as exc:
        say_error(f"mailtui: config error: {exc}")
        return 2
    except CliError as exc:
        say_error(f"mailtui: {exc}")
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        say_error(f"mailtui: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
