"""The benchmark's output: medians of the rounds, the tables, the notes under them.

The samples come from ``run.py`` keyed by (load key, target name); target
names are ``mailtui`` (this tree), ``Postfix`` and ``tree <label>`` for each
``--tree``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import statistics
import subprocess

from common import REPO

BIG_QUEUE_TARGETS = {"first_s": 5.0, "rss_mib": 300.0, "lag_max_ms": 100.0, "vs_empty": 0.9}


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def median_sample(samples: list):
    good = [s for s in samples if not s.error]
    if not good:
        return None, samples[0].error if samples else "no run"
    rate = statistics.median(s.rate for s in good)
    spread = (max(s.rate for s in good) - min(s.rate for s in good)) / rate if len(good) > 1 and rate else 0.0
    lags = [s.extra.get("lag") or {} for s in good]
    lat = [s.extra.get("latency") or {} for s in good]
    maxes = [x["max_ms"] for x in lags if "max_ms" in x]
    return {"rate": rate, "cpu_ms": statistics.median(s.cpu_ms for s in good),
            "rss_mib": max(s.peak_rss_kib for s in good) / 1024, "spread": spread, "n": len(good),
            "errors": len(samples) - len(good), "loop": statistics.median(s.extra.get("loop_busy", 0.0) for s in good),
            "lag_p99": _median(x.get("p99_ms") for x in lags), "lag_max": max(maxes) if maxes else None,
            "lat_p50": _median(x.get("p50_ms") for x in lat), "lat_p99": _median(x.get("p99_ms") for x in lat),
            "extra": good[len(good) // 2].extra}, ""


def _pair(a, b, digits: int = 1) -> str:
    if a is None or b is None:
        return "—"
    return f"{a:.{digits}f} / {b:.{digits}f}"


def _mark(ok: bool, text: str) -> str:
    return f"[{'green' if ok else 'red'}]{text} {'✓' if ok else '✗'}[/]"


def build_table(samples: dict, loads: list, with_postfix: bool, trees: list[str], rss: dict | None):
    from rich.table import Table
    table = Table(title="mailtui benchmark", title_justify="left")
    for name, justify in (("load", "left"), ("mailtui msg/s", "right"), ("CPU ms/msg", "right"),
                          ("peak RSS MiB", "right"), ("loop busy", "right"), ("lag p99 / max ms", "right"),
                          ("250 p50 / p99 ms", "right"), ("spread", "right")):
        table.add_column(name, justify=justify)
    if with_postfix:
        for name in ("Postfix msg/s", "Postfix CPU ms/msg", "Postfix 250 p50 / p99"):
            table.add_column(name, justify="right")
    for label in trees:
        table.add_column(f"{label} msg/s", justify="right")
        table.add_column(f"vs {label}", justify="right")
    table.add_column("ratio", justify="right")
    table.add_column("target", justify="right")
    medians = {}
    for load in loads:
        m, _ = median_sample(samples.get((load.key, "mailtui"), []))
        medians[load.key] = m
        row = [load.label]
        if m is None:
            row += ["[red]error[/red]", "", "", "", "", "", ""]
        else:
            row += [f"{m['rate']:,.0f}", f"{m['cpu_ms']:.2f}", f"{m['rss_mib']:.0f}", f"{m['loop']:.0%}",
                    _pair(m["lag_p99"], m["lag_max"]), _pair(m["lat_p50"], m["lat_p99"], 2),
                    f"±{m['spread'] * 50:.0f}%" if m["n"] > 1 else "1 run"]
        ratio = None
        ratio_text = target_text = ""
        if with_postfix:
            if load.postfix:
                p, _ = median_sample(samples.get((load.key, "Postfix"), []))
                row += [f"{p['rate']:,.0f}", f"{p['cpu_ms']:.2f}", _pair(p["lat_p50"], p["lat_p99"], 2)] if p \
                    else ["[red]error[/red]", "", ""]
                if p and m:
                    ratio = m["rate"] / p["rate"]
                    ratio_text = f"{ratio:.2f}× Postfix"
            else:
                row += ["—", "—", "—"]
        for label in trees:
            t, _ = median_sample(samples.get((load.key, f"tree {label}"), []))
            row += [f"{t['rate']:,.0f}" if t else "[red]error[/red]",
                    f"{m['rate'] / t['rate']:.2f}×" if t and m else ""]
        if load.compare:
            base = medians.get(load.compare)
            if base and m:
                ratio = m["rate"] / base["rate"]
                ratio_text = f"{ratio:.2f}× {load.compare_word}"
        if load.target and ratio is not None and (load.compare or with_postfix):
            target_text = _mark(ratio >= load.target, f"≥ {load.target:.1f}×")
        elif load.target and not load.compare and not with_postfix:
            target_text = f"≥ {load.target:.1f}× Postfix (needs --vs-postfix)"
        table.add_row(*row, ratio_text, target_text)
    if rss is not None:
        _rss_row(table, rss, with_postfix, trees)
    return table


def _rss_row(table, rss: dict, with_postfix: bool, trees: list[str]) -> None:
    first = rss.get("rss_after_1000")
    last = rss.get(f"rss_after_{rss['messages']}")
    if not (first and last):
        table.add_row("RSS check", f"[red]{rss.get('error', 'incomplete')}[/red]")
        return
    growth = (last - first) / 1024
    row = [f"RSS after {rss['messages']:,} vs 1,000 msgs", f"{rss.get('rate_' + str(rss['messages']), 0):,.0f}",
           "", f"{last / 1024:.0f}", "", "", "", ""]
    row += ["—"] * (3 if with_postfix else 0) + [""] * (2 * len(trees))
    row += [f"+{growth:.1f} MiB ({first / 1024:.0f}→{last / 1024:.0f})", _mark(growth <= 50, "≤ 50 MiB")]
    table.add_row(*row)


def big_queue_table(samples: dict, key: str, names: list[str], empty_rate: float | None, size: int):
    """The big-queue load, one row per mailtui tree, with the issue's targets."""
    from rich.table import Table
    t = BIG_QUEUE_TARGETS
    table = Table(title=f"{size:,} deferred messages in the spool", title_justify="left")
    for name in ("mailtui", "start → first 250 s", "scan s", "msg/s during scan", "msg/s after",
                 "vs empty queue", "peak RSS MiB", "lag p99 / max ms", "NOOP RTT p99 / max ms"):
        table.add_column(name, justify="left" if name == "mailtui" else "right")
    table.add_row("target", f"≤ {t['first_s']:.0f}", "", "", "", f"≥ {t['vs_empty']}", f"≤ {t['rss_mib']:.0f}",
                  f"max ≤ {t['lag_max_ms']:.0f}", "", style="dim")
    for name in names:
        m, err = median_sample(samples.get((key, name), []))
        if m is None:
            table.add_row(name, f"[red]{err[:60]}[/red]")
            continue
        x = m["extra"]
        vs = m["rate"] / empty_rate if empty_rate else None
        noop = x.get("noop") or {}
        table.add_row(
            name, _mark(x["first_s"] <= t["first_s"], f"{x['first_s']:.1f}"),
            f"{x['scan_s']:.1f} (+{x['indexed_s'] - x['scan_s']:.0f} index)" if x.get("scan_s") is not None else "—",
            f"{x['rate_during_scan']:,.0f}" if x.get("rate_during_scan") else "— (scan over)",
            f"{m['rate']:,.0f}", _mark(vs >= t["vs_empty"], f"{vs:.2f}×") if vs else "(needs local-10x4k)",
            _mark(m["rss_mib"] <= t["rss_mib"], f"{m['rss_mib']:.0f}"),
            _mark(m["lag_max"] <= t["lag_max_ms"], _pair(m["lag_p99"], m["lag_max"])) if m["lag_max"] is not None
            else "— (no probe)", _pair(noop.get("p99_ms"), noop.get("max_ms")))
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


def environment_notes(args, trees: dict) -> list[str]:
    loop = "asyncio (MAILTUI_LOOP=asyncio)" if args.loop == "asyncio" else "uvloop" if _has("uvloop") else "asyncio"
    notes = [f"{os.cpu_count()} cores, Python {platform.python_version()}, event loop {loop}; "
             f"{args.messages:,} messages per load, median of {args.rounds} round(s); smtp-source "
             f"{'reuses connections (-d)' if args.reuse else 'opens one connection per message'}.",
             f"mailtui code: {getattr(args, 'code_state', '') or code_state()}"
             f"{'' if args.live_code else ' (copied at the start of the run)'}."]
    notes += [f"tree {label}: {where}" for label, where in trees.items()]
    notes.append("End to end: from smtp-source's first connection until every message is in the Maildir's "
                 "new/ (relay: received by smtp-sink and gone from the queue). CPU: the server's "
                 "utime+stime over that window (Postfix: master and all its daemons).")
    if args.vs_postfix:
        notes.append("Postfix reaches the sink through transport_maps (its resolver cannot be pointed at the "
                     "loopback DNS); mailtui looks the MX up in dnsmasq (cached after the first).")
    notes.append("Loop busy: CPU of mailtui's main (event-loop) thread / wall time; near 100% means the "
                 "loop, not the disk, limits throughput. Lag: how late mailtui's 10 ms timer fired during "
                 "the load (its `status` control verb; — for trees without it).")
    notes.append("250 p50/p99: one more session beside smtp-source sends a message of the load's size every "
                 "10 ms and times its final '.' to the 250 (its messages count toward 'every message').")
    notes.append("Spread: ± half the range of the rounds. Noise: 2 shared cores; other work on the machine "
                 "moves these figures by 10-20%; compare ratios from the same run.")
    return notes


def code_state(root=REPO) -> str:
    """The mailtui code measured: HEAD and a digest of uncommitted changes under mailtui/."""
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        diff = subprocess.run(["git", "-C", str(root), "diff", "HEAD", "--", "mailtui"], capture_output=True,
                              timeout=30).stdout
        untracked = subprocess.run(["git", "-C", str(root), "ls-files", "--others", "--exclude-standard",
                                    "mailtui"], capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    h = hashlib.sha1(diff)
    for name in sorted(untracked):
        try:
            h.update(name.encode() + (root / name).read_bytes())
        except OSError:
            pass
    dirty = bool(diff or untracked)
    return f"{head}" + (f" + uncommitted changes under mailtui/ (digest {h.hexdigest()[:10]})" if dirty else "")


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
