"""The IMAP layers stay apart: parse (pure) → state (no sockets) → I/O.

The parse layer must not import Textual, asyncio or sockets (the I/O layer
owns those), nor anything of mailtui outside ``mailtui.access.imap``. The
state layer (session, dispatch, command handlers) may use the store but
never sockets or TLS; only ``server`` does.
"""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
from pathlib import Path

from mailtui.access import imap

PACKAGE_DIR = Path(imap.__file__).parent
STATE = {"session", "dispatch", "mailboxcmds", "messagecmds", "selection", "listing"}
IO = {"server"}
MODULES = sorted(m.name for m in pkgutil.iter_modules([str(PACKAGE_DIR)]) if m.name not in STATE | IO)
FORBIDDEN = ("textual", "asyncio", "socket", "ssl", "selectors")


def imported_roots(name: str) -> set[str]:
    tree = ast.parse((PACKAGE_DIR / f"{name}.py").read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add((node.module or "").split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            found.add("." + node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
    return found


def test_the_state_layer_touches_no_socket():
    for name in STATE:
        roots = imported_roots(name)
        assert not roots & {"socket", "ssl", "selectors", "textual", ".server"}, (name, roots)


def test_every_module_imports_only_the_standard_library_and_its_siblings():
    assert {"parser", "message", "response", "search", "mutf7"} <= set(MODULES)
    for name in MODULES:
        tree = ast.parse((PACKAGE_DIR / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert not (node.module or "").startswith("mailtui"), (name, node.module)
                else:
                    assert node.level == 1, (name, node.module)          # siblings only, never ..
                roots = [node.module or ""] if node.level == 0 else []
            elif isinstance(node, ast.Import):
                roots = [alias.name for alias in node.names]
            else:
                continue
            for root in roots:
                assert root.split(".")[0] not in FORBIDDEN + ("mailtui",), (name, root)


def test_importing_the_package_loads_no_ui_or_network_modules():
    code = ("import " + ", ".join(f"mailtui.access.imap.{name}" for name in MODULES)
            + "\nimport sys\nprint('\\n'.join(sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    loaded = set(result.stdout.split())
    assert not any(m.split(".")[0] == "textual" for m in loaded)
    assert not {m for m in loaded if m.startswith("mailtui.")} - {
        "mailtui.access", "mailtui.access.imap", *(f"mailtui.access.imap.{name}" for name in MODULES)}
