"""The big-queue load: ``serve`` started on a spool of N deferred messages (default 500,000).

Measured, as the issue asks: the time from starting ``mailtui serve`` to the
first accepted message; local delivery throughput (10 sessions × 4 KiB)
right after that (while a background spool scan may still run) and again
once the scan and the index writes it caused are over, to compare with an
empty queue; peak RSS; the loop's
lag over the whole run (the server's ``status`` verb, from its start), and
NOOP round trips on a session of their own (seen from outside, so trees
without a lag probe are measured too).

The spool is written once per run (files, no fsync, like the 50k history)
and hard-linked into each round's data_dir: mailtui never writes into a
spool file in place (it replaces and unlinks), so rounds cannot disturb
each other. Hard links share the page cache, so every round starts warm.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from common import log, settle_disk
from loads import Sample, fill_spool, maildir_reached, measure_smtp
from probes import NoopPinger, first_250

SPOOL_MESSAGE_SIZE = 1024


def spool_template(base: Path, count: int) -> Path:
    """The shared spool of ``count`` deferred messages (written on first use)."""
    spool = base / f"bigq-template-{count}" / "spool"
    if not spool.exists():
        t0 = time.perf_counter()
        log(f"writing {count:,} deferred messages for the big-queue load ...")
        fill_spool(spool, count, size=SPOOL_MESSAGE_SIZE)
        settle_disk()
        log(f"{count:,} deferred messages written in {time.perf_counter() - t0:.0f}s")
    return spool


def link_spool(template: Path, spool: Path) -> None:
    spool.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-al", str(template), str(spool)], check=True, timeout=1800)


def wait_start_up(target, started: float, timeout: float) -> tuple[float | None, float | None]:
    """Seconds from ``started`` until the server's spool scan ended, and until its queue index
    had nothing left to write; None for a server without them."""
    deadline = time.perf_counter() + timeout
    scanned = None
    while time.perf_counter() < deadline:
        status = target.control("queue_status")
        if status is None:
            return None, None
        if scanned is None and not status["scanning"]:
            scanned = time.perf_counter() - started
        if scanned is not None and not status.get("indexing"):
            return scanned, time.perf_counter() - started
        time.sleep(0.2)
    raise RuntimeError(f"the spool scan and its index writes did not end within {timeout:.0f}s")


def measure_big_queue(target, template: Path, *, messages: int, size: int, rcpt: str) -> Sample:
    """One round on one mailtui target; the Sample's rate is the throughput after the scan."""
    link_spool(template, target.spool)
    settle_disk()
    new_dir = target.maildir_new
    started = time.perf_counter()
    target.launch()
    noop = None
    try:
        first = first_250(target.smtp_port, rcpt, started, timeout=1800, proc=target.proc)
        log(f"big queue: first message accepted {first:.2f}s after start")
        noop = NoopPinger(target.smtp_port).start()
        timeout = max(300.0, messages / 10)
        during = measure_smtp(target, messages=messages, sessions=10, size=size, rcpt=rcpt,
                              done=maildir_reached(new_dir, 1 + messages), timeout=timeout)
        status = target.control("queue_status")
        scanning_after_load = bool(status and status["scanning"])
        scan_s, indexed_s = wait_start_up(target, started, timeout=1800)
        time.sleep(2.0)
        done_before = sum(1 for _ in new_dir.iterdir())
        after = measure_smtp(target, messages=messages, sessions=10, size=size, rcpt=rcpt,
                             done=maildir_reached(new_dir, done_before + messages), timeout=timeout)
        lag = target.control("status")   # the first call: its window began at start
    finally:
        if noop is not None:
            noop.stop()
    sample = Sample(messages, after.seconds, after.cpu, target.peak_rss_kib(),
                    after.error or during.error or noop.error, dict(after.extra))
    sample.extra.update({
        "first_s": round(first, 3), "scan_s": round(scan_s, 3) if scan_s is not None else None,
        "indexed_s": round(indexed_s, 3) if indexed_s is not None else None,
        "rate_during_scan": during.rate if scanning_after_load else None, "rate_first_load": during.rate,
        "rss_kib": target.rss_kib(), "noop": noop.figures(),
        "lag": lag["lag"] if lag else None, "status": lag,
    })
    return sample
