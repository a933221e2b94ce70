"""Print a Config back as TOML (``mailtui config``)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from ..config import Config, Endpoint


def _value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (Path, str, Endpoint)):
        text = str(value).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    if isinstance(value, tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    raise TypeError(type(value))


def dump(config: Config) -> str:
    lines = [f"# effective configuration (from {config.source})"]
    for section in fields(config):
        if section.name == "source":
            continue
        lines.append(f"\n[{section.name}]")
        body = getattr(config, section.name)
        for f in fields(body):
            lines.append(f"{f.name} = {_value(getattr(body, f.name))}")
    return "\n".join(lines)
