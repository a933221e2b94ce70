"""LIST and LSUB (RFC 3501 §6.3.8-9, LIST-EXTENDED RFC 5258, SPECIAL-USE RFC 6154): pure.

:func:`list_entries` takes the folder names that exist and the subscribed
names, and returns the ``(attributes, name)`` pairs a LIST answers with, in
order. ``%`` stops at the hierarchy delimiter and ``*`` does not; a pattern
that reaches into a level whose parent does not exist answers with the
parent as ``\\Noselect`` (as Dovecot does), so clients
can still walk the tree.
"""

from __future__ import annotations

import re
from functools import lru_cache

from ...store.mailboxes import DELIMITER, SPECIAL_USE


@lru_cache(maxsize=256)
def pattern_regex(pattern: str) -> re.Pattern[str]:
    out = []
    for char in pattern:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append(f"[^{re.escape(DELIMITER)}]*")
        else:
            out.append(re.escape(char))
    regex = "".join(out)
    if pattern[:5].upper() == "INBOX":       # INBOX is case-insensitive, even as a prefix
        regex = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(regex, re.DOTALL)


def matches(name: str, pattern: str) -> bool:
    return pattern_regex(pattern).fullmatch(name) is not None


def list_entries(names: list[str], subscribed: list[str], reference: str, patterns: tuple[str, ...], *,
                 selection: frozenset[str] = frozenset(), returns: frozenset[str] = frozenset(),
                 lsub: bool = False) -> list[tuple[list[str], str]]:
    """The LIST (or LSUB) answer: ``(attributes, name)`` for every matching name."""
    existing = set(names)
    subs = set(subscribed)
    only_subscribed = lsub or "SUBSCRIBED" in selection
    universe = [n for n in subscribed] if only_subscribed else list(names)
    parents = {p for n in universe for p in _parents(n)} - set(universe)
    out: list[tuple[list[str], str]] = []
    seen: set[str] = set()
    full_patterns = [reference + p for p in patterns]
    for name in _ordered(universe + sorted(parents)):
        if name in seen or not any(matches(name, p) for p in full_patterns):
            continue
        seen.add(name)
        attrs = _attributes(name, name in existing, existing, subs, returns, selection, lsub)
        if "SPECIAL-USE" in selection and not any(a in SPECIAL_USE.values() for a in attrs):
            continue
        if name in parents and "%" not in "".join(full_patterns):   # "*" reaches the children themselves
            continue
        out.append((attrs, name))
    return out


def _ordered(names: list[str]) -> list[str]:
    return sorted(dict.fromkeys(names), key=lambda n: (n != "INBOX", n))


def _parents(name: str) -> list[str]:
    parts = name.split(DELIMITER)
    return [DELIMITER.join(parts[:i]) for i in range(1, len(parts))]


def _attributes(name: str, exists: bool, existing: set[str], subs: set[str], returns: frozenset[str],
                selection: frozenset[str], lsub: bool) -> list[str]:
    attrs: list[str] = []
    if not exists:
        attrs.append("\\Noselect")
    if not lsub:
        prefix = name + DELIMITER
        attrs.append("\\HasChildren" if any(n.startswith(prefix) for n in existing) else "\\HasNoChildren")
        special = SPECIAL_USE.get(name)
        if special:
            attrs.append(special)
    if ("SUBSCRIBED" in returns or "SUBSCRIBED" in selection) and name in subs:
        attrs.append("\\Subscribed")
    return attrs
