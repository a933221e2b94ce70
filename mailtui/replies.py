"""SMTP replies and their RFC 3463 enhanced status codes, in one place.

mailtui's own replies always carry an enhanced code (it advertises
ENHANCEDSTATUSCODES); a remote server's reply may or may not, and then the
code its class implies stands in. After aiosmtpd's ``statuscodes`` catalogue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_OURS = re.compile(rb"^[245]\d\d[ -]\d\.\d{1,3}\.\d{1,3}(?: |$)")
_THEIRS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")

# The enhanced code a reply code gets when its text has none.
DEFAULT_STATUS = {
    b"2": b"2.0.0", b"421": b"4.7.0", b"450": b"4.2.0", b"451": b"4.3.0", b"452": b"4.3.1",
    b"454": b"4.7.0", b"500": b"5.5.2", b"501": b"5.5.4", b"502": b"5.5.1", b"503": b"5.5.1",
    b"504": b"5.5.4", b"530": b"5.7.0", b"535": b"5.7.8", b"538": b"5.7.11", b"550": b"5.0.0",
    b"552": b"5.3.4", b"553": b"5.1.3", b"554": b"5.0.0", b"555": b"5.5.4",
}


@dataclass(frozen=True, slots=True)
class SmtpReply:
    """A reply to give a client: ``550 5.7.1 text``."""

    code: int
    status: str
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.status} {self.text}"


def add_enhanced_status(reply: bytes) -> bytes:
    """Give one of our 2xx/4xx/5xx reply lines an enhanced code if it lacks one."""
    if reply[:1] not in b"245" or len(reply) < 4 or _OURS.match(reply):
        return reply
    code = DEFAULT_STATUS.get(reply[:3]) or DEFAULT_STATUS.get(reply[:1]) \
        or (b"4.0.0" if reply[:1] == b"4" else b"5.0.0")
    text = reply[4:]
    return reply[:4] + code + (b" " + text if text else b"")


def enhanced_status(code: int, message: str) -> str:
    """The enhanced code in a remote server's reply, or the one its class implies."""
    match = _THEIRS.match(message.strip())
    if match and match.group(1) == str(code)[0]:
        return ".".join(match.groups())
    klass = str(code)[0] if code else "4"
    return f"{klass}.0.0" if klass in "245" else "4.0.0"


def one_line(message: str) -> str:
    """A multi-line reply's text joined into one line, for logs and DSNs."""
    return " ".join(part.strip() for part in message.splitlines() if part.strip())
