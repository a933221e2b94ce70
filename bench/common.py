"""Shared helpers of the benchmark: tools, ports, /proc figures, directory counts.

Everything the benchmark starts listens on loopback only (127.0.0.1 and
127.0.0.2) and is stopped by its process id when the run ends.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SBIN = ("/usr/sbin", "/sbin", "/usr/bin")
CLK_TCK = os.sysconf("SC_CLK_TCK")


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# -- tools --------------------------------------------------------------------------------

def which(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for folder in SBIN:
        path = Path(folder) / name
        if path.exists() and os.access(path, os.X_OK):
            return str(path)
    return None


def _apt_install(packages: list[str]) -> None:
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Postfix's package asks for a mail setup: answer "No configuration", so no
    # dialog appears and no system Postfix is configured or started by it.
    subprocess.run(["debconf-set-selections"], input=b"postfix postfix/main_mailer_type select No configuration\n",
                   check=False, env=env)
    log(f"apt-get install -y {' '.join(packages)}")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", *packages], check=True, env=env,
                   stdout=subprocess.DEVNULL)


def _pip_install(args: list[str]) -> None:
    log(f"pip install {' '.join(args)}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *args], check=True)


def ensure_tools(*, postfix: bool = True, dns: bool = True, uvloop: bool = True,
                 profiler: bool = False) -> None:
    """Install what the benchmark drives, when it is missing (needs root for apt)."""
    packages = []
    if postfix and not all(which(t) for t in ("smtp-source", "smtp-sink", "postconf", "postfix")):
        packages.append("postfix")
    if dns and not which("dnsmasq"):
        packages.append("dnsmasq-base")
    if packages:
        _apt_install(packages)
    if importlib.util.find_spec("aiosmtpd") is None or importlib.util.find_spec("tinydb") is None:
        _pip_install(["-e", f"{REPO}[fast]" if uvloop else str(REPO)])
    if uvloop and importlib.util.find_spec("uvloop") is None:
        _pip_install(["uvloop>=0.19"])
    if profiler and which("py-spy") is None:
        _pip_install(["py-spy"])


# -- ports and processes ------------------------------------------------------------------

def free_port(host: str = "127.0.0.1", udp: bool = False) -> int:
    """A port free for TCP (and UDP if asked) on ``host``."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if not udp:
            return port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            try:
                u.bind((host, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port")


def wait_port(host: str, port: int, timeout: float = 60.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout:.0f}s")


def stop_process(proc: subprocess.Popen | None, timeout: float = 20.0, group: bool = False) -> None:
    """SIGTERM, then SIGKILL, one process (or its own process group) by id."""
    if proc is None or proc.poll() is not None:
        return
    import signal
    try:
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.terminate()
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(10)
    except ProcessLookupError:
        pass


# -- /proc --------------------------------------------------------------------------------

def _stat_fields(pid: int, tid: int | None = None) -> list[str] | None:
    path = f"/proc/{pid}/task/{tid}/stat" if tid is not None else f"/proc/{pid}/stat"
    try:
        raw = Path(path).read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces: fields after the last ')'
    return raw[raw.rfind(")") + 2:].split()


def cpu_seconds(pid: int, children: bool = False) -> float:
    """utime + stime of ``pid`` (all its threads); with ``children``, of its reaped children too."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    # after ')' : state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / CLK_TCK


def thread_cpu_seconds(pid: int, tid: int) -> float:
    """utime + stime of one thread (the main thread of a process has tid == pid)."""
    fields = _stat_fields(pid, tid)
    return 0.0 if fields is None else (int(fields[11]) + int(fields[12])) / CLK_TCK


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (scans /proc)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def tree_cpu_seconds(root: int) -> float:
    """CPU of a process tree: every live process, plus what the root reaped from dead children.

    A child that exits between two readings moves from the live sum into the
    root's cutime/cstime, so differences stay exact (for a one-level tree such
    as Postfix's master and its daemons).
    """
    total = cpu_seconds(root, children=True)
    for child in children_of(root):
        total += cpu_seconds(child)
    return total


def proc_status_kib(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` figure in KiB (VmRSS, VmHWM ...), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def tree_rss_kib(root: int) -> int:
    return proc_status_kib(root, "VmRSS") + sum(proc_status_kib(c, "VmRSS") for c in children_of(root))


# -- directories --------------------------------------------------------------------------

def count_files(path: str | os.PathLike) -> int:
    """Entries of a directory not starting with '.', 0 if it does not exist."""
    try:
        with os.scandir(path) as it:
            return sum(1 for e in it if not e.name.startswith("."))
    except FileNotFoundError:
        return 0


def count_tree(path: str | os.PathLike) -> int:
    """Regular files below ``path`` (recursive)."""
    total = 0
    for _, _, files in os.walk(path):
        total += len(files)
    return total


def settle_disk() -> None:
    """Write back dirty pages of earlier runs so they do not land in the next measurement."""
    os.sync()
