"""MTA-STS policies (RFC 8461): the TXT record, the policy file, and which MX hosts it allows.

Pure functions, table-tested: no DNS, no HTTPS, no clock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

MAX_AGE_LIMIT = 31_557_600          # RFC 8461 3.2: at most a year
MODES = ("enforce", "testing", "none")
_ID = re.compile(r"^[A-Za-z0-9]{1,32}$")


class PolicyError(ValueError):
    """A policy file or TXT record that does not follow RFC 8461; the text says what is wrong."""


@dataclass(frozen=True)
class Policy:
    domain: str
    id: str                       # the TXT record's id when it was fetched
    mode: str                     # enforce, testing, none
    mx: tuple[str, ...]           # patterns: "mail.example.com", "*.example.net"
    max_age: int
    fetched_at: float = 0.0

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    @property
    def expires(self) -> float:
        return self.fetched_at + self.max_age


def parse_txt(records: list[bytes]) -> str | None:
    """The policy id of a domain's ``_mta-sts`` TXT records, None unless exactly one is valid (3.1)."""
    ids = []
    for record in records:
        text = record.decode("ascii", "replace")
        if not text.startswith("v=STSv1"):
            continue
        fields = dict(_tag_values(text))
        if fields.get("v") == "STSv1" and _ID.match(fields.get("id", "")):
            ids.append(fields["id"])
        else:
            return None           # a record that claims STSv1 but is malformed: treat as none
    return ids[0] if len(ids) == 1 else None


def _tag_values(text: str) -> list[tuple[str, str]]:
    pairs = []
    for part in text.split(";"):
        key, eq, value = part.strip().partition("=")
        if eq:
            pairs.append((key.strip(), value.strip()))
    return pairs


def parse_policy(text: str, domain: str, policy_id: str, fetched_at: float = 0.0) -> Policy:
    """The policy file's fields (3.2); raises :class:`PolicyError` if it is not a valid policy."""
    fields: dict[str, str] = {}
    mx: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        key, colon, value = line.partition(":")
        if not colon:
            raise PolicyError(f"policy line without a colon: {line[:60]!r}")
        key, value = key.strip(), value.strip()
        if key == "mx":
            mx.append(_mx_pattern(value))
        else:
            fields.setdefault(key, value)       # the first of a repeated field counts
    if fields.get("version") != "STSv1":
        raise PolicyError(f"policy version is {fields.get('version')!r}, not STSv1")
    mode = fields.get("mode", "")
    if mode not in MODES:
        raise PolicyError(f"policy mode is {mode!r}, not one of {', '.join(MODES)}")
    age = fields.get("max_age", "")
    if not (age.isascii() and age.isdigit()) or len(age) > 10:       # 1*10DIGIT
        raise PolicyError(f"policy max_age is {age!r}, not a number of seconds")
    if mode != "none" and not mx:
        raise PolicyError(f"policy mode {mode} lists no mx")
    return Policy(domain, policy_id, mode, tuple(mx), min(int(age), MAX_AGE_LIMIT), fetched_at)


def _mx_pattern(value: str) -> str:
    pattern = value.lower().rstrip(".")
    labels = pattern.removeprefix("*.").split(".")
    if not pattern or not all(re.fullmatch(r"[a-z0-9_-]{1,63}", label) for label in labels):
        raise PolicyError(f"policy mx {value[:80]!r} is not a host name or *.domain")
    return pattern


def mx_allowed(policy: Policy, mx_host: str) -> bool:
    """Whether ``mx_host`` matches one of the policy's mx patterns (4.1).

    ``*.example.com`` stands for exactly one more label: ``mx.example.com``,
    neither ``example.com`` nor ``a.mx.example.com``.
    """
    host = mx_host.lower().rstrip(".")
    for pattern in policy.mx:
        if pattern.startswith("*."):
            first, _, rest = host.partition(".")
            if first and rest == pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def policy_text(mode: str, mx: list[str], max_age: int) -> str:
    """A policy file to serve (for ``mailtui dns``), lines ending in CRLF as RFC 8461 shows them."""
    lines = ["version: STSv1", f"mode: {mode}", *(f"mx: {host}" for host in mx), f"max_age: {max_age}"]
    return "\r\n".join(lines) + "\r\n"
