"""The two status lines: listeners and their state, counters, a rate sparkline, the loop lag."""

from __future__ import annotations

from typing import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Sparkline, Static

from ....server.lag import LagStats
from ..backend import ListenerView
from ..model import Counters

LAG_SLOW = 0.1   # seconds: a loop held this long delays every session (issue 13's target for the maximum)


def short_error(error: str) -> str:
    """asyncio's "error while attempting to bind on address (...): reason" says it twice."""
    return error.rpartition("): ")[2] if error.startswith("error while attempting to bind") else error


def listeners_text(listeners: Sequence[ListenerView], phase: str, problem: str = "", note: str = "") -> Text:
    """``phase`` is starting, running, waiting, stopping, stopped or failed.

    ``note`` (e.g. "attached to pid 123") comes first, dim: with many listeners
    the line is cut at the right, and the note says whose listeners these are.
    """
    text = Text.assemble((" mailtui ", "bold reverse"), " ")
    if note and phase not in ("stopping", "stopped"):
        text.append(f"{note} │ ", style="dim")
    if problem:
        text.append(f"✗ {problem}", style="bold red")
        return text
    if phase == "starting" or (phase == "running" and not listeners):
        text.append("starting …", style="dim")
        return text
    for listener in sorted(listeners, key=lambda li: li.ok):   # failures first: they matter most
        name = listener.proto.upper()
        if listener.ok and phase == "running":
            text.append("● ", style="green")
            text.append(f"{name} {listener.bound}  ")
        elif listener.ok:
            text.append("○ ", style="dim")
            text.append(f"{name} {listener.bound}  ", style="dim")
        else:
            text.append(f"✗ {name} {listener.address}: {short_error(listener.error)}  ", style="bold red")
    if phase in ("stopping", "stopped"):
        text.append(f"({phase})", style="yellow")
    text.rstrip()
    return text


def human(n: int) -> str:
    if n < 10_000:
        return str(n)
    if n < 1_000_000:
        return f"{n / 1000:.1f}k" if n < 100_000 else f"{n // 1000}k"
    return f"{n / 1_000_000:.1f}M"


def counters_text(counters: Counters, queued: int = 0) -> Text:
    text = Text(" ")
    text.append("queue ", style="dim")
    text.append(human(queued), style="bold yellow" if queued else "bold")
    text.append("  │  ", style="dim")
    for label, value, style in (("accepted", counters.accepted, ""),
                                ("delivered", counters.delivered, "green"),
                                ("deferred", counters.deferred, "yellow"),
                                ("bounced", counters.bounced, "red"),
                                ("refused", counters.refused, "magenta")):
        text.append(f"{label} ", style="dim")
        text.append(human(value), style=f"bold {style}".strip())
        text.append("  ")
    return text


def milliseconds(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.1f}" if ms < 10 else f"{ms:.0f}"


def lag_text(lag: LagStats | None, short: bool = False) -> Text:
    """``lag p99 1.2 ms · max 4.0 ms`` (short: ``lag 1.2/4.0 ms``): how late the server's loop ran over the
    last period."""
    if lag is None:
        return Text("lag —", style="dim")
    p99, top = (Text(milliseconds(v), style="bold yellow" if v >= LAG_SLOW else "") for v in (lag.p99, lag.max))
    if short:
        return Text.assemble(("lag ", "dim"), p99, ("/", "dim"), top, (" ms", "dim"))
    return Text.assemble(("lag p99 ", "dim"), p99, " ms", (" · max ", "dim"), top, " ms")


class StatusBar(Vertical):
    """Listener addresses and state with the message rate; the counters and the loop lag.

    The lag is shown in full or short by the screen's width (``console.tcss``).
    Its parts have fixed sizes (the lag's changes only when its figures
    gain or lose a digit), so the updates a few times a second redraw two
    lines and hardly ever re-run the screen's layout; unchanged text is not
    even redrawn.
    """

    DEFAULT_CSS = """
    StatusBar {
        height: 2;
        background: $panel;
        & Horizontal { height: 1; }
        & Static { text-wrap: nowrap; text-overflow: ellipsis; }
        #status-listeners { width: 1fr; }
        #status-rate { width: 9; color: $text-muted; }
        #status-spark { width: 12; margin-right: 1; }
        #status-numbers { width: 1fr; }
        #status-lag, #status-lag-short { width: auto; margin-right: 1; }
        &.-problem #status-rate, &.-problem #status-spark, &.-problem #status-lag-short { display: none; }
    }
    Screen.-wide StatusBar #status-spark { width: 32; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._shown: dict[str, object] = {}

    def compose(self) -> ComposeResult:
        with Horizontal():
            yield Static(id="status-listeners")
            yield Static(id="status-rate")
            yield Sparkline([0.0], id="status-spark")
            yield Static(lag_text(None, short=True), id="status-lag-short")
        with Horizontal():
            yield Static(id="status-numbers")
            yield Static(lag_text(None), id="status-lag")

    def _update(self, name: str, content: Text | str) -> None:
        shown = self._shown.get(name)
        if shown != content:
            self._shown[name] = content
            resized = shown is None or len(shown) != len(content)   # (the lag's width follows its figures)
            self.query_one(f"#{name}", Static).update(content, layout=resized and name.startswith("status-lag"))

    def show_listeners(self, listeners: Sequence[ListenerView], phase: str, problem: str = "",
                       note: str = "") -> None:
        self.set_class(bool(problem) or any(not li.ok for li in listeners), "-problem")
        self._update("status-listeners", listeners_text(listeners, phase, problem, note))

    def show_lag(self, lag: LagStats | None) -> None:
        self._update("status-lag", lag_text(lag))
        self._update("status-lag-short", lag_text(lag, short=True))

    def show_counters(self, counters: Counters, queued: int, per_minute: int, series: list[float]) -> None:
        self._update("status-numbers", counters_text(counters, queued))
        self._update("status-rate", f"{human(per_minute):>4}/min ")
        if self._shown.get("status-spark") != series:
            self._shown["status-spark"] = series
            self.query_one("#status-spark", Sparkline).data = series
