"""The layout holds: imports only go down, there are no cycles, the core runs without Textual.

After Harlequin's import-hygiene test and import-linter's layers contract.
The packages follow the mail path; a module may import from its own package
and from the layers below it, never from a layer above or a sibling::

    frontends            cli, serve, console, demo: the front ends on the event stream
    server               the core wired together (Core, listeners, data-dir lock)
    receive send access  SMTP intake / remote delivery / POP3 and IMAP (siblings)
    mailauth             DKIM, SPF, DMARC, MTA-STS: who really sent a message
    admin dns            clients, mailboxes, admin verbs / the one DNS resolver (siblings)
    store                Maildirs, spool queue, TinyDB state, durable writes
    (top-level modules)  config, addresses, events, wire, replies: the shared vocabulary

Only ``mailtui.frontends.console`` (and the demo, which opens it) may import
Textual, so ``mailtui serve`` and the admin commands start fast and work where
Textual is not installed.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import mailtui

PACKAGE = Path(mailtui.__file__).parent
LAYERS = {"frontends": 6, "server": 5, "receive": 4, "send": 4, "access": 4, "mailauth": 3, "admin": 2, "dns": 2,
          "store": 1}
TEXTUAL_ALLOWED = ("mailtui.frontends.console", "mailtui.frontends.demo")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(name: str, path: Path) -> set[str]:
    """Every mailtui module ``path`` imports, at module level or inside functions."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "mailtui")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "mailtui":
                continue
            found.add(target)
            found.update(f"{target}.{a.name}" for a in node.names)  # "from . import courier"
    modules = all_modules()
    return {m for m in found if m in modules and m != name}


def layer(name: str) -> tuple[int, str]:
    if name == "mailtui.__main__":  # ``python -m mailtui``: the entry point, above everything
        return 7, "__main__"
    parts = name.split(".")
    if len(parts) > 2 and parts[1] in LAYERS:
        return LAYERS[parts[1]], parts[1]
    if len(parts) == 2 and parts[1] in LAYERS:  # a subpackage's __init__
        return LAYERS[parts[1]], parts[1]
    return 0, ""


def graph() -> dict[str, set[str]]:
    return {name: imports_of(name, path) for name, path in all_modules().items()}


def test_the_layout_has_the_packages_of_the_mail_path():
    names = set(all_modules())
    for package in LAYERS:
        assert f"mailtui.{package}" in names
    assert {"mailtui.receive.smtp", "mailtui.access.pop3", "mailtui.send.scheduler",
            "mailtui.store.queue", "mailtui.server.core", "mailtui.frontends.cli"} <= names


def test_imports_only_go_down():
    wrong = []
    for name, targets in graph().items():
        rank, package = layer(name)
        for target in targets:
            t_rank, t_package = layer(target)
            if t_rank > rank or (t_rank == rank and t_package != package):
                wrong.append(f"{name} -> {target}")
    assert not wrong, "imports that go up or sideways:\n" + "\n".join(sorted(wrong))


def test_nothing_imports_the_cli():
    users = sorted(n for n, targets in graph().items()
                   if "mailtui.frontends.cli" in targets and n != "mailtui.__main__")
    assert not users, f"the CLI is the top of the tree, yet {users} import it"


def test_there_is_no_import_cycle():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            # a package's __init__ is loaded by its children; only count real imports
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            assert cycle is None, "import cycle: " + " -> ".join(cycle)


def imported_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True)
    return set(result.stdout.split())


def test_core_modules_do_not_import_textual():
    core = sorted(n for n in all_modules() if not n.startswith(TEXTUAL_ALLOWED) and n != "mailtui.__main__")
    assert {"mailtui.server.core", "mailtui.receive.smtp", "mailtui.access.pop3", "mailtui.send.scheduler",
            "mailtui.store.queue", "mailtui.dns.resolver", "mailtui.store.db"} <= set(core)
    modules = imported_after("\n".join(f"import {name}" for name in core))
    leaked = sorted(m for m in modules if m == "textual" or m.startswith("textual."))
    assert not leaked, f"a core module imports Textual: {leaked[:5]}"
    assert "mailtui.frontends.console" not in modules


def test_textual_is_imported_only_by_the_console():
    wrong = []
    for name, path in all_modules().items():
        if name.startswith(TEXTUAL_ALLOWED):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            wrong += [f"{name}: {m}" for m in mods if m.split(".")[0] == "textual"]
    assert not wrong, wrong


def test_the_console_model_batch_and_lifecycle_are_plain_python():
    modules = imported_after("import mailtui.frontends.console.model, mailtui.frontends.console.batch, "
                             "mailtui.frontends.console.lifecycle, mailtui.frontends.console.backend")
    assert not any(m == "textual" or m.startswith("textual.") for m in modules)


def test_the_cli_starts_without_the_console():
    modules = imported_after("import mailtui.frontends.cli, mailtui.frontends.serve, mailtui.frontends.demo.world")
    assert not any(m == "textual" or m.startswith("textual.") for m in modules)
