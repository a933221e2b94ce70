"""The core runs without Textual: importing it must not import the console's toolkit.

After Harlequin's test of the same name. ``mailtui serve`` and the CLI's admin
commands start fast and work where Textual is not installed; only
``mailtui.console`` (and ``mailtui.demo``, which opens it) may import it.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import mailtui

UI_MODULES = {"console", "demo"}   # mailtui.demo imports the console lazily, but it is a front end
CORE_MODULES = sorted(m.name for m in pkgutil.iter_modules(mailtui.__path__)
                      if m.name not in UI_MODULES and not m.name.startswith("_"))


def imported_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    return set(result.stdout.split())


def test_core_modules_do_not_import_textual():
    assert {"core", "smtp", "pop3", "delivery", "queue", "resolver", "store"} <= set(CORE_MODULES)
    modules = imported_after("\n".join(f"import mailtui.{name}" for name in CORE_MODULES))
    leaked = sorted(m for m in modules if m == "textual" or m.startswith("textual."))
    assert not leaked, f"a core module imports Textual: {leaked[:5]}"
    assert "mailtui.console" not in modules


def test_the_console_model_is_plain_python():
    modules = imported_after("import mailtui.console.model")
    assert not any(m == "textual" or m.startswith("textual.") for m in modules)


def test_the_cli_starts_without_the_console():
    modules = imported_after("import mailtui.cli, mailtui.serve, mailtui.demo_world")
    assert not any(m == "textual" or m.startswith("textual.") for m in modules)
