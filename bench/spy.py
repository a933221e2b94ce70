"""py-spy around one load: a flame graph (SVG), the raw stacks, and a top-N table.

py-spy samples the running server from outside (``--nonblocking``: the
server is never paused), so the profiled run is a separate run from the
measured ones.
"""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

from common import which

_LINE = re.compile(r"\s*\((?P<file>[^()]*?)(?::\d+)?\)\s*$")


class PySpy:
    def __init__(self, pid: int, out: Path, *, rate: int = 250, idle: bool = False):
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        spy = which("py-spy") or "py-spy"
        common = ["--pid", str(pid), "--rate", str(rate), "--nonblocking"] + (["--idle"] if idle else [])
        self.procs = [
            subprocess.Popen([spy, "record", "--format", "raw", "-o", str(out.with_suffix(".txt")), *common],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
            subprocess.Popen([spy, "record", "--format", "flamegraph", "-o", str(out.with_suffix(".svg")),
                              *common],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE),
        ]

    def stop(self) -> None:
        import signal
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stderr.close()


def _func(frame: str) -> str:
    """'deliver (mailtui/maildir.py:83)' -> 'deliver (mailtui/maildir.py)'."""
    frame = frame.strip()
    m = _LINE.search(frame)
    if not m:
        return frame
    name = frame[: m.start()].strip()
    path = m.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{name} ({path})"


def _stacks(raw: Path, thread: str):
    """(frames, count) of each stack; thread 'main' keeps the event loop's, 'workers' the executor's."""
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        is_main = frames[0].startswith("_run_module_as_main")
        if (thread == "main" and not is_main) or (thread == "workers" and is_main):
            continue
        yield [_func(f) for f in frames], int(count)


def _counts(raw: Path, thread: str) -> tuple[int, Counter[str], Counter[str]]:
    """Total samples, own samples and inclusive samples per function."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for frames, n in _stacks(raw, thread):
        total += n
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    return total, own, incl


def summarize(raw: Path, top: int = 15, thread: str = "all") -> tuple[int, list[tuple[str, int, int]]]:
    """Total samples and the ``top`` functions by own samples: (function, self, inclusive)."""
    total, own, incl = _counts(raw, thread)
    rows = [(f, own[f], incl[f]) for f, _ in own.most_common(top)]
    return total, rows


def top_inclusive(raw: Path, top: int = 15, thread: str = "main") -> tuple[int, list[tuple[str, int, int]]]:
    """The ``top`` functions by inclusive samples, leaving out the frames every stack has."""
    total, own, incl = _counts(raw, thread)
    rows = [(f, own[f], c) for f, c in incl.most_common() if c < total * 0.999][:top]
    return total, rows
