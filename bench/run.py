#!/usr/bin/env python3
"""mailtui's throughput benchmark: one command, one table.

    python bench/run.py [--quick] [--vs-postfix] [--console] [--messages N] [--rounds 3]

Installs what it needs (Postfix's smtp-source/smtp-sink, dnsmasq, uvloop),
starts ``mailtui serve`` on loopback with a fresh data_dir for every round,
loads it with smtp-source, and prints msg/s, CPU per message and peak RSS for
each load (medians of the rounds). With --vs-postfix a throwaway Postfix on
loopback takes the same loads in the same run, interleaved round by round,
and the table gives mailtui/Postfix ratios. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import REPO, count_files, ensure_tools, log, settle_disk  # noqa: E402

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
    p.add_argument("--rss-messages", type=int, help="messages for the RSS check (default 100,000; --quick 10,000)")
    p.add_argument("--imap", action="store_true", help="also the IMAP rows, beside Dovecot (bench/imap.py)")
    p.add_argument("--only", metavar="KEYS", help="comma-separated load keys (see --list), plus 'rss'")
    p.add_argument("--list", action="store_true", help="list the loads and exit")
    p.add_argument("--auth", action="store_true", help="only the sender-authentication loads (bench/authloads.py: "
                                                      "DKIM signing on relay, SPF+DKIM+DMARC checks at intake)")
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
        self.registry_state: Path | None = None

    def setup(self) -> None:
        from targets import make_registry_template
        self.registry_state = make_registry_template(self.base / "registry-template")

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
        return MailtuiTarget(wd, self.registry_state, dns_port=dns_port, sink_port=sink_port,
                             console=load.console, output=load.output, loop=self.args.loop,
                             delivery=load.delivery)

    def run_one(self, load: Load, name: str, rnd: int, *, profile_to: Path | None = None):
        from loads import Sink, fill_history, fill_maildir, maildir_reached, measure_pop3, measure_smtp
        from targets import MAILBOX, PASSWORD, SINK_DOMAIN
        n = self.args.messages
        wd = self.base / (f"{load.key}-r{rnd}-{name.lower()}" + ("-profile" if profile_to else ""))
        wd.mkdir(parents=True)
        sink = Sink(wd).start() if load.kind == "relay" else None
        target = self.make_target(name, load, wd / "server", sink.port if sink else None)
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
            if load.kind == "local":
                sample = measure_smtp(target, messages=n, sessions=load.sessions, size=load.size, rcpt=MAILBOX,
                                      done=maildir_reached(target.maildir_new, baseline_new + n),
                                      timeout=timeout, reuse=self.args.reuse)
            elif load.kind == "relay":
                sample = measure_smtp(target, messages=n, sessions=load.sessions, size=load.size,
                                      rcpt=f"rcpt@{SINK_DOMAIN}",
                                      done=lambda: sink.count() >= n and target.queued() <= baseline_queue,
                                      timeout=timeout, reuse=self.args.reuse, poll=0.02)
                if sample.error and sink is not None:
                    sample.error += f" (sink has {sink.count()}, queue {target.queued() - baseline_queue})"
            else:
                sample = measure_pop3(target, user=MAILBOX, password=PASSWORD, expect=n, limit=n,
                                      timeout=timeout)
                left = count_files(target.maildir_new)
                if not sample.error and left != baseline_new:
                    sample.error = f"{left - baseline_new} messages not deleted after QUIT"
            if sample.error:
                sample.error += " | " + target.error_output()[-300:].replace("\n", " ")
        finally:
            lag = attached.stop() if attached is not None else {}
            if spy is not None:
                spy.stop()
            target.stop()
            if sink is not None:
                sink.stop()
        sample.extra.update(lag)
        sample.extra["loadavg"] = round(os.getloadavg()[0], 2)
        return sample

    def run_load(self, load: Load, targets: list[str]) -> None:
        for rnd in range(1, self.args.rounds + 1):
            for name in targets:
                sample = self.run_one(load, name, rnd)
                self.samples.setdefault((load.key, name), []).append(sample)
                status = f"ERROR {sample.error}" if sample.error else \
                    f"{sample.rate:,.0f} msg/s, {sample.cpu_ms:.2f} ms CPU/msg" + (
                        f", loop thread {sample.extra['loop_busy']:.0%} busy" if "loop_busy" in sample.extra else "") + (
                        f", login {sample.extra['login_s']}s" if "login_s" in sample.extra else "") + (
                        f", console lag p50 {sample.extra['lag_p50_s']}s p99 {sample.extra['lag_p99_s']}s max "
                        f"{sample.extra['lag_max_s']}s over {sample.extra['lag_messages']} messages, "
                        f"resyncs {sample.extra['resyncs']}" if "lag_p50_s" in sample.extra else "")
                log(f"{load.key} round {rnd} {name}: {status} (load avg {sample.extra['loadavg']})")

    # -- the RSS check --

    def run_rss(self) -> dict:
        from loads import maildir_reached, measure_smtp
        from targets import MAILBOX, MailtuiTarget
        total = self.args.rss_messages
        wd = self.base / "rss"
        wd.mkdir()
        target = MailtuiTarget(wd / "server", self.registry_state, loop=self.args.loop)
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
                                 timeout=max(300.0, step / 10), reuse=self.args.reuse, poll=0.05)
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


# -- output ---------------------------------------------------------------------------------------

def median_sample(samples: list):
    good = [s for s in samples if not s.error]
    if not good:
        return None, samples[0].error if samples else "no run"
    rate = statistics.median(s.rate for s in good)
    cpu = statistics.median(s.cpu_ms for s in good)
    rss = max(s.peak_rss_kib for s in good)
    spread = (max(s.rate for s in good) - min(s.rate for s in good)) / rate if len(good) > 1 and rate else 0.0
    errors = len(samples) - len(good)
    loop = statistics.median(s.extra.get("loop_busy", 0.0) for s in good)
    return {"rate": rate, "cpu_ms": cpu, "rss_mib": rss / 1024, "spread": spread, "n": len(good),
            "errors": errors, "loop": loop}, ""


def build_table(bench: Bench, loads: list[Load], with_postfix: bool, rss: dict | None):
    from rich.table import Table
    table = Table(title="mailtui benchmark", title_justify="left")
    table.add_column("load")
    table.add_column("mailtui msg/s", justify="right")
    table.add_column("CPU ms/msg", justify="right")
    table.add_column("peak RSS MiB", justify="right")
    table.add_column("loop busy", justify="right")
    table.add_column("spread", justify="right")
    if with_postfix:
        table.add_column("Postfix msg/s", justify="right")
        table.add_column("Postfix CPU ms/msg", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("target", justify="right")
    medians = {}
    for load in loads:
        m, err = median_sample(bench.samples.get((load.key, "mailtui"), []))
        medians[load.key] = m
        row = [load.label]
        if m is None:
            row += ["[red]error[/red]", "", "", "", ""]
        else:
            row += [f"{m['rate']:,.0f}", f"{m['cpu_ms']:.2f}", f"{m['rss_mib']:.0f}", f"{m['loop']:.0%}",
                    f"±{m['spread'] * 50:.0f}%" if m["n"] > 1 else "1 run"]
        ratio_text, target_text = "", ""
        ratio = None
        if with_postfix:
            if load.postfix:
                p, perr = median_sample(bench.samples.get((load.key, "Postfix"), []))
                row += [f"{p['rate']:,.0f}", f"{p['cpu_ms']:.2f}"] if p else ["[red]error[/red]", ""]
                if p and m:
                    ratio = m["rate"] / p["rate"]
                    ratio_text = f"{ratio:.2f}× Postfix"
            else:
                row += ["—", "—"]
        if load.compare:
            base = medians.get(load.compare)
            if base and m:
                ratio = m["rate"] / base["rate"]
                ratio_text = f"{ratio:.2f}× {load.compare_word}"
        if load.target and ratio is not None and (load.compare or with_postfix):
            ok = ratio >= load.target
            target_text = f"[{'green' if ok else 'red'}]≥ {load.target:.1f}× {'✓' if ok else '✗'}[/]"
        elif load.target and not load.compare and not with_postfix:
            target_text = f"≥ {load.target:.1f}× Postfix (needs --vs-postfix)"
        row += [ratio_text, target_text]
        table.add_row(*row)
    if rss is not None:
        first = rss.get("rss_after_1000")
        last = rss.get(f"rss_after_{rss['messages']}")
        if first and last:
            growth = (last - first) / 1024
            ok = growth <= 50
            mark = f"[{'green' if ok else 'red'}]≤ 50 MiB {'✓' if ok else '✗'}[/]"
            label = f"RSS after {rss['messages']:,} vs 1,000 msgs"
            row = [label, f"{rss.get('rate_' + str(rss['messages']), 0):,.0f}", "",
                   f"{last / 1024:.0f}", "", ""]
            if with_postfix:
                row += ["—", "—"]
            row += [f"+{growth:.1f} MiB ({first / 1024:.0f}→{last / 1024:.0f})", mark]
            table.add_row(*row)
        else:
            table.add_row("RSS check", f"[red]{rss.get('error', 'incomplete')}[/red]")
    return table


def print_profile(key: str, sample, total: int, rows) -> None:
    from rich.console import Console
    from rich.table import Table
    t = Table(title=f"py-spy, {key}: {total} samples, {sample.rate:,.0f} msg/s while profiled "
                    f"(loop thread busy {sample.extra.get('loop_busy', 0):.0%})",
              title_justify="left")
    t.add_column("function (file)")
    t.add_column("self %", justify="right")
    t.add_column("total %", justify="right")
    for func, own, incl in rows:
        t.add_row(func, f"{100 * own / total:.1f}", f"{100 * incl / total:.1f}")
    Console(width=200).print(t)


def environment_notes(args) -> list[str]:
    import platform
    notes = []
    loop = "asyncio (MAILTUI_LOOP=asyncio)" if args.loop == "asyncio" else "uvloop" if _has("uvloop") else "asyncio"
    notes.append(f"{os.cpu_count()} cores, Python {platform.python_version()}, event loop {loop}; "
                 f"{args.messages:,} messages per load, median of {args.rounds} round(s); smtp-source "
                 f"{'reuses connections (-d)' if args.reuse else 'opens one connection per message'}.")
    notes.append(f"mailtui code: {getattr(args, 'code_state', '') or code_state()}"
                 f"{'' if args.live_code else ' (copied at the start of the run)'}.")
    notes.append("End to end: from smtp-source's first connection until every message is in the Maildir's "
                 "new/ (relay: received by smtp-sink and gone from the queue). CPU: the server's "
                 "utime+stime over that window (Postfix: master and all its daemons).")
    if args.vs_postfix:
        notes.append("Postfix reaches the sink through transport_maps (its resolver cannot be pointed at the "
                     "loopback DNS); mailtui looks the MX up in dnsmasq (cached after the first).")
    notes.append("Loop busy: CPU of mailtui's main (event-loop) thread / wall time; near 100% means the "
                 "loop, not the disk, limits throughput.")
    notes.append("Spread: ± half the range of the rounds. Noise: 2 shared cores; other work on the machine "
                 "moves these figures by 10-20%; compare ratios from the same run.")
    return notes


def code_state() -> str:
    """The mailtui code measured: HEAD and a digest of uncommitted changes under mailtui/."""
    import hashlib
    import subprocess
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        diff = subprocess.run(["git", "-C", str(REPO), "diff", "HEAD", "--", "mailtui"], capture_output=True,
                              timeout=30).stdout
        untracked = subprocess.run(["git", "-C", str(REPO), "ls-files", "--others", "--exclude-standard",
                                    "mailtui"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    h = hashlib.sha1(diff)
    for name in sorted(untracked):
        try:
            h.update(name.encode() + (REPO / name).read_bytes())
        except OSError:
            pass
    dirty = bool(diff or untracked)
    return f"{head}" + (f" + uncommitted changes under mailtui/ (digest {h.hexdigest()[:10]})" if dirty else "")


def _has(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for load in LOADS:
            print(f"{load.key:20} {load.label}")
        print(f"{'rss':20} RSS after {args.rss_messages:,} messages vs after 1,000")
        return 0
    only = set(args.only.split(",")) if args.only else None
    loads = [l for l in LOADS if (only is None or l.key in only) and (args.console or not l.console)
             and (args.attached or not l.attached)]
    if args.console:
        from targets import console_available  # (checks the work tree; the snapshot is a copy of it)
        if not console_available():
            log("--console: mailtui/console does not exist yet; the console load is skipped")
            loads = [l for l in loads if not l.console]
    if not args.no_install:
        ensure_tools(postfix=True, dns=True, uvloop=args.loop == "auto", profiler=bool(args.profile))
    base = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="mailtui-bench-", dir="/var/tmp"))
    base.mkdir(parents=True, exist_ok=True)
    log(f"work folder {base} (data dirs are kept until the end: deleting thousands of files just before "
        f"creating thousands slows the creating)")
    import targets
    state = code_state()
    if not args.live_code:
        snapshot = base / "code"
        shutil.copytree(REPO / "mailtui", snapshot / "mailtui",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        targets.CODE = snapshot
        log(f"measuring a copy of mailtui/ taken now: {state}")
    args.code_state = state
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
        bench.setup()
        if not args.profile_only:
            for load in loads:
                targets = ["mailtui"] + (["Postfix"] if args.vs_postfix and load.postfix else [])
                bench.run_load(load, targets)
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
            Path(args.json).write_text(json.dumps({
                "args": vars(args), "loadavg_start": load_start,
                "samples": {f"{k[0]}/{k[1]}": [asdict(s) | {"rate": s.rate, "cpu_ms": s.cpu_ms} for s in v]
                            for k, v in bench.samples.items()},
                "rss": rss}, indent=1))
        if not args.keep and not args.workdir:
            log("removing the work folder")
            shutil.rmtree(base, ignore_errors=True)
    from rich.console import Console
    console = Console(width=200)
    if not args.profile_only:
        console.print(build_table(bench, loads, args.vs_postfix, rss))
        for note in environment_notes(args):
            console.print(f"  {note}", style="dim", markup=False)
        console.print(f"  Load average (1 min) at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}.",
                      style="dim")
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
