#!/usr/bin/env python3
"""mailtui's throughput benchmark: one command, one table.

    python bench/run.py [--quick] [--vs-postfix] [--tree DIR|REV] [--big-queue] [--messages N] [--rounds 3]

Installs what it needs (Postfix's smtp-source/smtp-sink, dnsmasq, uvloop),
starts ``mailtui serve`` on loopback with a fresh data_dir for every round,
loads it with smtp-source, and prints msg/s, CPU per message, peak RSS,
event-loop lag and the end-of-DATA -> 250 latency for each load (medians of
the rounds). With --vs-postfix a throwaway Postfix on loopback, and with
--tree mailtui from another source tree, take the same loads in the same
run, interleaved round by round, and the table gives the ratios. See
bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, count_files, ensure_tools, log, settle_disk
from report import (
    big_queue_table,
    build_table,
    code_state,
    environment_notes,
    median_sample,
    print_profile,
)

KiB = 1024


@dataclass(frozen=True)
class Load:
    key: str
    label: str
    kind: str                      # local | relay | pop3
    sessions: int = 10
    size: int = 4 * KiB
    history: bool = False
    postfix: bool = True           # Postfix takes this load too (with --vs-postfix)
    compare: str = ""              # key of the mailtui row this one is a ratio of
    compare_word: str = ""         # "fresh", "headless", ...
    target: float = 0.0            # the ratio target (0: none)
    console: bool = False
    output: str = "devnull"
    default: bool = True           # in a run without --only
    attached: bool = False         # consoles and a browser tab attached to `serve` (bench/attached.py)
    delivery: str = ""             # extra lines for mailtui's [delivery] table


LOADS = [
    Load("local-1x4k", "local, 1 session, 4 KiB", "local", 1, 4 * KiB),
    Load("local-10x4k", "local, 10 sessions, 4 KiB", "local", 10, 4 * KiB, target=1.0),
    Load("local-1x100k", "local, 1 session, 100 KiB", "local", 1, 100 * KiB),
    Load("local-10x100k", "local, 10 sessions, 100 KiB", "local", 10, 100 * KiB, target=0.8),
    Load("relay-10x4k", "relay via MX, 10 sessions, 4 KiB", "relay", 10, 4 * KiB),
    Load("relay-10x4k-noreuse", "relay 10×4 KiB, no connection reuse", "relay", 10, 4 * KiB,
         postfix=False, compare="relay-10x4k", compare_word="with reuse",
         delivery="connection_reuse_limit = 1\n"),
    Load("pop3", "POP3 RETR+DELE, 4 KiB", "pop3", 1, 4 * KiB, postfix=False),
    Load("local-10x4k-hist", "local 10×4 KiB, 50k history", "local", 10, 4 * KiB, history=True,
         postfix=False, compare="local-10x4k", compare_word="fresh", target=0.9),
    Load("relay-10x4k-hist", "relay 10×4 KiB, 50k history", "relay", 10, 4 * KiB, history=True,
         postfix=False, compare="relay-10x4k", compare_word="fresh", target=0.9),
    Load("pop3-hist", "POP3 RETR+DELE, 50k history", "pop3", 1, 4 * KiB, history=True, postfix=False,
         compare="pop3", compare_word="fresh", target=0.9),
    Load("local-10x4k-file", "local 10×4 KiB, serve stdout→file", "local", 10, 4 * KiB, postfix=False,
         compare="local-10x4k", compare_word="/dev/null", output="file"),
    Load("console-10x4k", "local 10×4 KiB, console open", "local", 10, 4 * KiB, postfix=False,
         compare="local-10x4k", compare_word="headless", target=0.9, console=True),
    Load("attached-10x4k", "local 10×4 KiB, 3 consoles + 1 browser tab attached", "local", 10, 4 * KiB,
         postfix=False, compare="local-10x4k", compare_word="none attached", target=0.9, attached=True),
    Load("bigq", "local 10×4 KiB, big deferred queue", "bigqueue", 10, 4 * KiB, postfix=False,
         compare="local-10x4k", compare_word="empty queue", target=0.9, default=False),
]


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="1 round, 1,000 messages, 10,000 for the RSS check")
    p.add_argument("--vs-postfix", action="store_true", help="run the same loads against a throwaway Postfix")
    p.add_argument("--console", action="store_true", help="also run 10×4 KiB with the console open (under a pty)")
    p.add_argument("--attached", action="store_true", help="also run 10×4 KiB with 3 consoles and a browser tab "
                                                           "attached to serve, and their lag (bench/attached.py)")
    p.add_argument("--messages", type=int, help="messages per load (default 5,000; --quick 1,000)")
    p.add_argument("--rounds", type=int, help="rounds per load, medians reported (default 3; --quick 1)")
    p.add_argument("--history", type=int, default=50_000, help="messages of history for the *-hist loads")
    p.add_argument("--tree", action="append", default=[], metavar="DIR|REV",
                   help="also measure mailtui from another source tree: a directory holding mailtui/, or a git "
                        "revision of this repository (extracted with git archive); repeatable")
    p.add_argument("--big-queue", action="store_true", help="also run the big-queue load (bigq; I/O heavy)")
    p.add_argument("--queue-size", type=int, default=500_000, help="deferred messages for the bigq load")
    p.add_argument("--rss-messages", type=int, help="messages for the RSS check (default 100,000; --quick 10,000)")
    p.add_argument("--imap", action="store_true", help="also the IMAP rows, beside Dovecot (bench/imap.py)")
    p.add_argument("--auth", action="store_true", help="only the sender-authentication loads (bench/authloads.py: "
                                                      "DKIM signing on relay, SPF+DKIM+DMARC checks at intake)")
    p.add_argument("--only", metavar="KEYS", help="comma-separated load keys (see --list), plus 'rss'")
    p.add_argument("--list", action="store_true", help="list the loads and exit")
    p.add_argument("--reuse", action="store_true", help="smtp-source -d: many messages per connection")
    p.add_argument("--loop", choices=("auto", "asyncio"), default="auto",
                   help="auto: uvloop when installed (what `mailtui serve` does); asyncio: MAILTUI_LOOP=asyncio")
    p.add_argument("--profile", metavar="DIR", help="after measuring, profile mailtui with py-spy under some "
                                                   "loads (--profile-loads); flame graphs and stacks in DIR")
    p.add_argument("--profile-only", action="store_true", help="with --profile: skip the measured loads")
    p.add_argument("--profile-loads", default="local-10x4k,local-10x100k", metavar="KEYS",
                   help="loads to profile (default: local-10x4k,local-10x100k)")
    p.add_argument("--workdir", help="where data dirs go (default: a new folder in /var/tmp)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--json", metavar="FILE", help="also write every sample as JSON")
    p.add_argument("--no-install", action="store_true", help="do not apt-get / pip install anything")
    p.add_argument("--live-code", action="store_true",
                   help="run mailtui from the work tree itself; by default the run uses a copy of mailtui/ taken "
                        "at its start, so edits made during a run do not change the code measured")
    import imap
    imap.add_arguments(p)
    args = p.parse_args(argv)
    args.messages = args.messages or (1000 if args.quick else 5000)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.rss_messages = args.rss_messages or (10_000 if args.quick else 100_000)
    return args


# -- running one load on one target ------------------------------------------------------------

class Bench:
    def __init__(self, args: argparse.Namespace, base: Path):
        self.args = args
        self.base = base
        self.samples: dict[tuple[str, str], list] = {}
        self.dns = None
        self.codes: dict[str, Path] = {}          # target name -> folder holding mailtui/
        self.trees: dict[str, str] = {}           # tree label -> what it is, for the notes
        self.registry: dict[str, Path] = {}

    def setup(self, code: Path) -> None:
        from targets import make_registry_template, tree_from_git
        self.codes["mailtui"] = code
        for spec in self.args.tree:
            folder = Path(spec)
            if (folder / "mailtui").is_dir():
                label = folder.resolve().name
                self.trees[label] = f"{folder.resolve()} ({code_state(folder.resolve())})"
            else:
                label = spec
                folder = tree_from_git(spec, self.base / f"tree-{spec}")
                self.trees[label] = f"git revision {spec} of {REPO}"
            self.codes[f"tree {label}"] = folder.resolve()
        for name, folder in self.codes.items():
            self.registry[name] = make_registry_template(self.base / f"registry-{name.replace(' ', '-')}",
                                                         code=folder)

    @property
    def mailtui_names(self) -> list[str]:
        return list(self.codes)

    def dns_server(self):
        if self.dns is None:
            from loads import Dnsmasq
            self.dns = Dnsmasq().start()
        return self.dns

    def close(self) -> None:
        if self.dns is not None:
            self.dns.stop()

    def make_target(self, name: str, load: Load, wd: Path, sink_port: int | None):
        from targets import MailtuiTarget, PostfixTarget
        if name == "Postfix":
            return PostfixTarget(wd, sink_port=sink_port)
        dns_port = self.dns_server().port if load.kind == "relay" else None
        return MailtuiTarget(wd, self.registry[name], dns_port=dns_port, sink_port=sink_port,
                             console=load.console, output=load.output, loop=self.args.loop,
                             code=self.codes[name], delivery=load.delivery)

    def run_one(self, load: Load, name: str, rnd: int, *, profile_to: Path | None = None):
        from loads import Sink
        wd = self.base / (f"{load.key}-r{rnd}-{name.lower().replace(' ', '-')}" + ("-profile" if profile_to else ""))
        wd.mkdir(parents=True)
        sink = Sink(wd).start() if load.kind == "relay" else None
        target = self.make_target(name, load, wd / "server", sink.port if sink else None)
        try:
            if load.kind == "bigqueue":
                sample = self.measure_big_queue(load, target)
            else:
                sample = self.measure(load, target, sink, profile_to)
            if sample.error:
                sample.error += " | " + target.error_output()[-300:].replace("\n", " ")
        finally:
            target.stop()
            if sink is not None:
                sink.stop()
        sample.extra["loadavg"] = round(os.getloadavg()[0], 2)
        return sample

    def measure_big_queue(self, load: Load, target):
        from bigqueue import measure_big_queue, spool_template
        from targets import MAILBOX
        template = spool_template(self.base, self.args.queue_size)
        return measure_big_queue(target, template, messages=self.args.messages, size=load.size, rcpt=MAILBOX)

    def measure(self, load: Load, target, sink, profile_to: Path | None):
        from loads import (
            fill_history,
            fill_maildir,
            maildir_reached,
            measure_pop3,
            measure_smtp,
        )
        from targets import MAILBOX, PASSWORD, SINK_DOMAIN
        n = self.args.messages
        spy = attached = None
        try:
            baseline_new = 0
            baseline_queue = 0
            if load.history:
                fill_history(target, self.args.history)
                baseline_new = self.args.history
                baseline_queue = self.args.history
            if load.kind == "pop3":
                fill_maildir(target.maildir_new, n, size=load.size)
            settle_disk()
            target.start(timeout=300)
            if load.attached:
                from attached import AttachedLoad
                attached = AttachedLoad(target)
            time.sleep(2.0 if load.history else 0.5)  # let start-up work (first state flush) pass
            if profile_to is not None:
                from spy import PySpy
                spy = PySpy(target.pid, profile_to)
                time.sleep(0.5)
            timeout = max(180.0, n / 15)
            control = getattr(target, "control", lambda op: None)
            control("status")  # the lag window starts here
            if load.kind == "local":
                sample = measure_smtp(target, messages=n, sessions=load.sessions, size=load.size, rcpt=MAILBOX,
                                      done=maildir_reached(target.maildir_new, baseline_new + n),
                                      timeout=timeout, reuse=self.args.reuse)
            elif load.kind == "relay":
                sample = measure_smtp(target, messages=n, sessions=load.sessions, size=load.size,
                                      rcpt=f"rcpt@{SINK_DOMAIN}",
                                      done=lambda extra: sink.count() >= n + extra
                                      and target.queued() <= baseline_queue,
                                      timeout=timeout, reuse=self.args.reuse, poll=0.02)
                if sample.error and sink is not None:
                    sample.error += f" (sink has {sink.count()}, queue {target.queued() - baseline_queue})"
            else:
                sample = measure_pop3(target, user=MAILBOX, password=PASSWORD, expect=n, limit=n,
                                      timeout=timeout)
                left = count_files(target.maildir_new)
                if not sample.error and left != baseline_new:
                    sample.error = f"{left - baseline_new} messages not deleted after QUIT"
            status = control("status")
            if status is not None:
                sample.extra["lag"] = status["lag"]
        finally:
            console_lag = attached.stop() if attached is not None else {}
            if spy is not None:
                spy.stop()
        sample.extra.update(console_lag)
        return sample

    def run_load(self, load: Load, targets: list[str]) -> None:
        for rnd in range(1, self.args.rounds + 1):
            for name in targets:
                sample = self.run_one(load, name, rnd)
                self.samples.setdefault((load.key, name), []).append(sample)
                log(f"{load.key} round {rnd} {name}: {progress_text(sample)} (load avg {sample.extra['loadavg']})")

    # -- the RSS check --

    def run_rss(self) -> dict:
        from loads import maildir_reached, measure_smtp
        from targets import MAILBOX, MailtuiTarget
        total = self.args.rss_messages
        wd = self.base / "rss"
        wd.mkdir()
        target = MailtuiTarget(wd / "server", self.registry["mailtui"], loop=self.args.loop, code=self.codes["mailtui"])
        out = {"messages": total}
        try:
            settle_disk()
            target.start()
            time.sleep(0.5)
            done_count = 0
            for step in (1000, total - 1000):
                if step <= 0:
                    continue
                done_count += step
                s = measure_smtp(target, messages=step, sessions=10, size=4 * KiB, rcpt=MAILBOX,
                                 done=maildir_reached(target.maildir_new, done_count),
                                 timeout=max(300.0, step / 10), reuse=self.args.reuse, poll=0.05, probe=False)
                if s.error:
                    out["error"] = s.error
                    break
                time.sleep(1.5)  # a store flush or two
                out[f"rss_after_{done_count}"] = target.rss_kib()
                out[f"rate_{done_count}"] = s.rate
                log(f"rss: {done_count} messages, RSS {target.rss_kib() / 1024:.1f} MiB, {s.rate:,.0f} msg/s")
            out["peak_kib"] = target.peak_rss_kib()
        finally:
            target.stop()
        return out

    # -- profiling --

    def run_profiles(self, folder: Path) -> None:
        from spy import summarize, top_inclusive
        for key in self.args.profile_loads.split(","):
            load = next(l for l in LOADS if l.key == key)
            out = folder / f"mailtui-{key}"
            sample = self.run_one(load, "mailtui", 0, profile_to=out)
            log(f"profiled {key}: {sample.rate:,.0f} msg/s under py-spy; {out}.svg, {out}.txt")
            total, rows = summarize(out.with_suffix(".txt"), 15)
            print_profile(f"{key}, all threads, by own time", sample, total, rows)
            total, rows = top_inclusive(out.with_suffix(".txt"), 25, thread="main")
            print_profile(f"{key}, event-loop thread, by inclusive time", sample, total, rows)


def snapshot_code(args, base: Path) -> Path:
    """The mailtui/ to measure: a copy taken now (edits during the run do not count), or the tree."""
    import targets
    args.code_state = code_state()
    if args.live_code:
        return REPO
    code = base / "code"
    shutil.copytree(REPO / "mailtui", code / "mailtui", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    targets.CODE = code
    log(f"measuring a copy of mailtui/ taken now: {args.code_state}")
    return code


def write_json(path: Path, bench: Bench, rss: dict | None, load_start) -> None:
    path.write_text(json.dumps({
        "args": vars(bench.args), "loadavg_start": load_start,
        "samples": {f"{k[0]}/{k[1]}": [asdict(s) | {"rate": s.rate, "cpu_ms": s.cpu_ms} for s in v]
                    for k, v in bench.samples.items()},
        "rss": rss}, indent=1))


def print_report(console, bench: Bench, loads: list[Load], rss: dict | None, load_start) -> None:
    args = bench.args
    console.print(build_table(bench.samples, [l for l in loads if l.kind != "bigqueue"], args.vs_postfix,
                              list(bench.trees), rss))
    for load in (l for l in loads if l.kind == "bigqueue"):
        empty, _ = median_sample(bench.samples.get((load.compare, "mailtui"), []))
        console.print(big_queue_table(bench.samples, load.key, bench.mailtui_names,
                                      empty["rate"] if empty else None, args.queue_size))
    for note in environment_notes(args, bench.trees):
        console.print(f"  {note}", style="dim", markup=False)
    console.print(f"  Load average (1 min) at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}.",
                  style="dim")


def progress_text(sample) -> str:
    if sample.error:
        return f"ERROR {sample.error}"
    x = sample.extra
    parts = [f"{sample.rate:,.0f} msg/s", f"{sample.cpu_ms:.2f} ms CPU/msg"]
    if "loop_busy" in x:
        parts.append(f"loop thread {x['loop_busy']:.0%} busy")
    if "login_s" in x:
        parts.append(f"login {x['login_s']}s")
    if "lag_p50_s" in x:
        parts.append(f"console lag p50 {x['lag_p50_s']}s p99 {x['lag_p99_s']}s max {x['lag_max_s']}s over "
                     f"{x['lag_messages']} messages, resyncs {x['resyncs']}")
    if x.get("lag"):
        parts.append(f"lag p99 {x['lag']['p99_ms']:.1f} ms, max {x['lag']['max_ms']:.1f} ms")
    if x.get("latency", {}).get("n"):
        parts.append(f"250 p50 {x['latency']['p50_ms']:.2f} ms, p99 {x['latency']['p99_ms']:.2f} ms")
    if "first_s" in x:
        parts.append(f"first 250 after {x['first_s']:.2f}s, scan {x['scan_s']}s, RSS {x['rss_kib'] / 1024:.0f} MiB")
    if "login_s" in x:
        parts.append(f"login {x['login_s']}s")
    return ", ".join(parts)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for load in LOADS:
            print(f"{load.key:20} {load.label}")
        print(f"{'rss':20} RSS after {args.rss_messages:,} messages vs after 1,000")
        return 0
    only = set(args.only.split(",")) if args.only else None
    loads = [l for l in LOADS if (l.key in only if only is not None else l.default or args.big_queue and
                                  l.kind == "bigqueue") and (args.console or not l.console)
             and (args.attached or not l.attached)]
    if args.console:
        from targets import (
            console_available,  # (checks the work tree; the snapshot is a copy of it)
        )
        if not console_available():
            log("--console: mailtui/console does not exist yet; the console load is skipped")
            loads = [l for l in loads if not l.console]
    if not args.no_install:
        ensure_tools(postfix=True, dns=True, uvloop=args.loop == "auto", profiler=bool(args.profile))
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mailtui-bench-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    log(f"work folder {base} (data dirs are kept until the end: deleting thousands of files just before "
        f"creating thousands slows the creating)")
    code = snapshot_code(args, base)
    if args.auth:
        import authloads
        return authloads.main(args, base)
    import signal
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    bench = Bench(args, base)
    load_start = os.getloadavg()
    rss = None
    imap_results = None
    try:
        bench.setup(code)
        if not args.profile_only:
            for load in loads:
                names = bench.mailtui_names + (["Postfix"] if args.vs_postfix and load.postfix else [])
                bench.run_load(load, names)
            if only is None or "rss" in only:
                rss = bench.run_rss()
            if args.imap:
                import imap
                imap_results = imap.run(args, base)
        if args.profile:
            bench.run_profiles(Path(args.profile).resolve())
    except KeyboardInterrupt:
        log("interrupted; printing what was measured")
    finally:
        bench.close()
        if args.json:
            write_json(Path(args.json), bench, rss, load_start)
        if not args.keep and not args.workdir:
            log("removing the work folder")
            shutil.rmtree(base, ignore_errors=True)
    from rich.console import Console
    console = Console(width=200)
    if not args.profile_only:
        print_report(console, bench, loads, rss, load_start)
        if imap_results:
            import imap
            imap.print_table(imap_results)
    failed = [f"{k[0]}/{k[1]}" for k, v in bench.samples.items() if any(s.error for s in v)]
    if failed:
        console.print(f"errors in: {', '.join(failed)}", style="red")
        for k, v in bench.samples.items():
            for s in v:
                if s.error:
                    console.print(f"  {k[0]}/{k[1]}: {s.error}", markup=False)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
