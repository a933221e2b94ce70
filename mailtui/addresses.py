"""Mail addresses, parsed once and strictly (RFC 5321 section 4.1.2).

Every address a peer sends goes through :func:`parse_path` before any policy
looks at it, so relay tricks (percent hacks, source routes, quoted ``@``,
bang paths) are judged on the one domain this parser found, never on a second
reading of the same text elsewhere.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

MAX_LOCAL_PART = 64
MAX_DOMAIN = 255
MAX_PATH = 256

_ATEXT = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+")
_ATEXT_UTF8 = re.compile(r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])+")
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?")
_LABEL_UTF8 = re.compile(r"(?:[A-Za-z0-9]|[^\x00-\x7f])(?:(?:[A-Za-z0-9-]|[^\x00-\x7f])*(?:[A-Za-z0-9]|[^\x00-\x7f]))?")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+")
_VALUE_UTF8 = re.compile(r"(?:[\x21-\x3c\x3e-\x7e]|[^\x00-\x7f])+")
_DOT_STRING = re.compile(r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*")


class AddressError(ValueError):
    """An address that breaks RFC 5321 syntax; ``reply`` is the SMTP answer to give."""

    def __init__(self, message: str, reply: str | None = None):
        super().__init__(message)
        self.reply = reply or f"553 5.1.3 {message}"


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: local part (unquoted) and domain (lower case, or a ``[literal]``)."""

    local: str
    domain: str

    def __str__(self) -> str:
        local = self.local
        if not _DOT_STRING.fullmatch(local) and not _is_utf8_dot_string(local):
            local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{local}@{self.domain}"

    @property
    def key(self) -> str:
        """Case-folded form used to look up local mailboxes."""
        return f"{self.local.lower()}@{self.domain}"

    @property
    def is_literal(self) -> bool:
        return self.domain.startswith("[")

    @property
    def needs_smtputf8(self) -> bool:
        return not str(self).isascii()


def _is_utf8_dot_string(local: str) -> bool:
    return not local.isascii() and all(_ATEXT_UTF8.fullmatch(a) for a in local.split("."))


def parse_domain(text: str, *, smtputf8: bool = False) -> str:
    """Validate a domain name (``sub-domain *("." sub-domain)``), return it lower-cased."""
    if not text:
        raise AddressError("empty domain")
    if len(text.encode("utf-8")) > MAX_DOMAIN:
        raise AddressError(f"domain longer than {MAX_DOMAIN} octets", "501 5.1.3 domain too long")
    if not text.isascii() and not smtputf8:
        raise AddressError("non-ASCII domain without SMTPUTF8", "553 5.6.7 non-ASCII address requires SMTPUTF8")
    label = _LABEL_UTF8 if smtputf8 else _LABEL
    for part in text.split("."):
        if not label.fullmatch(part) or len(part.encode("utf-8")) > 63:
            raise AddressError(f"bad domain {text!r}")
    return text.lower()


def literal_ip(domain: str) -> str | None:
    """The IP address in an address literal (``[192.0.2.1]``, ``[IPv6:::1]``), else None.

    Raises AddressError for a bracketed text that is not an address of its kind.
    """
    if not (domain.startswith("[") and domain.endswith("]")):
        return None
    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return ipaddress.IPv6Address(inner[5:]).compressed
        return str(ipaddress.IPv4Address(inner))
    except ValueError:
        raise AddressError(f"bad address literal {domain!r}") from None


def _parse_literal(text: str) -> str:
    ip = literal_ip(text)
    return f"[IPv6:{ip}]" if ":" in ip else f"[{ip}]"


def _parse_quoted(text: str, smtputf8: bool) -> tuple[str, int]:
    """Parse a Quoted-string at the start of ``text``; return (content, length consumed)."""
    out = []
    i = 1
    while i < len(text):
        ch = text[i]
        if ch == '"':
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(text) or not (" " <= text[i + 1] <= "~"):
                raise AddressError("bad quoted-pair in local part")
            out.append(text[i + 1])
            i += 2
            continue
        if not (ch == " " or ch == "!" or "#" <= ch <= "[" or "]" <= ch <= "~") and not (
            smtputf8 and ord(ch) > 0x7F
        ):
            raise AddressError("bad character in quoted local part")
        out.append(ch)
        i += 1
    raise AddressError("unterminated quoted local part")


def parse_mailbox(text: str, *, smtputf8: bool = False) -> Address:
    """Parse ``local@domain`` (no angle brackets)."""
    if not text.isascii() and not smtputf8:
        raise AddressError("non-ASCII address without SMTPUTF8", "553 5.6.7 non-ASCII address requires SMTPUTF8")
    if text.startswith('"'):
        local, used = _parse_quoted(text, smtputf8)
        rest = text[used:]
        if not rest.startswith("@"):
            raise AddressError("expected @ after quoted local part")
        domain_text = rest[1:]
    else:
        local, at, domain_text = text.rpartition("@")
        if not at:
            raise AddressError("address has no domain")
        atext = _ATEXT_UTF8 if smtputf8 else _ATEXT
        if not local or not all(atext.fullmatch(a) for a in local.split(".")):
            raise AddressError(f"bad local part in {text!r}")
    if not local:
        raise AddressError("empty local part")
    if len(local.encode("utf-8")) > MAX_LOCAL_PART:
        raise AddressError(f"local part longer than {MAX_LOCAL_PART} octets", "553 5.1.3 local part too long")
    if domain_text.startswith("[") and domain_text.endswith("]"):
        domain = _parse_literal(domain_text)
    else:
        domain = parse_domain(domain_text, smtputf8=smtputf8)
    return Address(local, domain)


def parse_address(text: str) -> Address:
    """Parse an address typed by an administrator (CLI, config): ``user@domain``."""
    return parse_mailbox(text.strip(), smtputf8=True)


def domain_of(address: str) -> str:
    """The domain of an address parsed before (a queued recipient), lower-cased."""
    return address.rpartition("@")[2].lower()


def split_path(arg: str) -> tuple[str, str]:
    """Split ``<path> params`` into the bracketed path and the parameter text."""
    arg = arg.strip()
    if not arg.startswith("<"):
        raise AddressError("address must be enclosed in <>", "501 5.1.7 address must be enclosed in <>")
    end = _closing_bracket(arg)
    path, rest = arg[: end + 1], arg[end + 1:]
    if rest and not rest.startswith(" "):
        raise AddressError("expected space after address", "501 5.5.4 expected space after address")
    return path, rest.strip()


def _closing_bracket(arg: str) -> int:
    quoted = False
    i = 1
    while i < len(arg):
        ch = arg[i]
        if ch == "\\" and quoted:
            i += 2
            continue
        if ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return i
        i += 1
    raise AddressError("unterminated <address>", "501 5.1.7 unterminated <address>")


def parse_path(path: str, *, null_ok: bool, smtputf8: bool = False,
               postmaster_domain: str | None = None) -> Address | None:
    """Parse ``<mailbox>`` (or ``<>`` when ``null_ok``); ``None`` is the null path.

    With ``postmaster_domain``, ``<Postmaster>`` without a domain is taken as
    postmaster at that domain (RFC 5321 section 4.5.1 requires it for RCPT).
    """
    try:
        octets = len(path.encode("utf-8"))
    except UnicodeEncodeError:  # undecodable bytes, passed on by aiosmtpd as surrogates
        raise AddressError("address is not valid UTF-8", "553 5.6.7 address is not valid UTF-8") from None
    if octets > MAX_PATH:
        raise AddressError(f"path longer than {MAX_PATH} octets", "501 5.1.3 path too long")
    if not (path.startswith("<") and path.endswith(">")):
        raise AddressError("address must be enclosed in <>", "501 5.1.7 address must be enclosed in <>")
    inner = path[1:-1]
    if inner == "":
        if null_ok:
            return None
        raise AddressError("empty recipient", "501 5.1.3 empty recipient address")
    if inner.startswith("@"):
        raise AddressError("source routes are not accepted", "553 5.1.3 source routes are not accepted")
    if postmaster_domain and inner.lower() == "postmaster":
        return Address("postmaster", postmaster_domain)
    return parse_mailbox(inner, smtputf8=smtputf8)


def parse_params(text: str, *, smtputf8: bool = False) -> dict[str, str | None]:
    """Parse ESMTP parameters (``KEY[=value]`` separated by spaces), keys upper-cased."""
    params: dict[str, str | None] = {}
    if not text:
        return params
    value_re = _VALUE_UTF8 if smtputf8 else _VALUE
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not _KEYWORD.fullmatch(key) or (eq and not value_re.fullmatch(value)):
            raise AddressError(f"bad parameter {item!r}", "501 5.5.4 bad parameter syntax")
        key = key.upper()
        if key in params:
            raise AddressError(f"duplicate parameter {key}", "501 5.5.4 duplicate parameter")
        params[key] = value if eq else None
    return params
