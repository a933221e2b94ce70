"""Running the console as a program: log records kept off the screen, the server stopped however it ends."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections import deque
from typing import Any, Iterator

from ...config import Config
from ..errors import CliError
from ..loop import give_way, run
from .app import MailtuiApp
from .lifecycle import owned_elsewhere
from .widgets.status import short_error


class _LogCapture(logging.Handler):
    """Log records kept for the console, instead of written over the screen.

    The core publishes its own warnings as events, so from mailtui's loggers
    only errors (a bug's traceback) are kept; from libraries, warnings too.
    """

    def __init__(self, sink: deque) -> None:
        super().__init__(logging.WARNING)
        self.sink = sink

    # aiosmtpd warns on every AUTH that it sets a deprecated attribute itself.
    NOISE = (("mail.log", "login_data is deprecated"),)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("mailtui") and (record.levelno < logging.ERROR
                                                  or record.name == "mailtui.server.core"):
            return
        if any(record.name == name and text in str(record.msg) for name, text in self.NOISE):
            return
        self.sink.append(record)


@contextlib.contextmanager
def capture_logs(sink: deque) -> Iterator[None]:
    """While the console runs, route every log record to ``sink`` (drained with each batch)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    root.handlers[:] = [_LogCapture(sink)]
    root.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


async def run_app(app: MailtuiApp, **kwargs: Any) -> None:
    """Run ``app`` with logging kept off the screen; the server is stopped however it ends."""
    with capture_logs(app.log_records):
        try:
            await app.run_async(**kwargs)
        finally:
            await app.lifecycle.stop()


def run_console(config: Config, *, attach_only: bool = False) -> None:
    """The console: attached to the running server, or running its own (never, with ``attach_only``)."""
    if attach_only or owned_elsewhere(config.server.data_dir):
        give_way()   # a console attached to a service: the service goes first for the CPU
    app = MailtuiApp(config, handle_signals=True, attach_only=attach_only)
    run(run_app(app))
    if app.lifecycle.attached:   # the server is another process's: its troubles are its own
        return
    for listener in app.core.listeners:
        if listener.error:
            print(f"mailtui: {listener.proto.upper()} could not listen on {listener.address}: "
                  f"{short_error(listener.error)}", file=sys.stderr)
    if app.lifecycle.problem:
        raise CliError(app.lifecycle.problem)
