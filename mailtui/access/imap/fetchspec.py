"""FETCH attributes (RFC 3501 §6.4.5): what the client asked for, as data.

:func:`parse_fetch_attributes` lives in the parser; this module holds the
values it produces and the names the response must echo back
(``BODY.PEEK[1]<0.10>`` is answered as ``BODY[1]<0>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SECTION_TEXTS = ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME")
SIMPLE = ("ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822", "RFC822.HEADER", "RFC822.SIZE",
          "RFC822.TEXT", "BODY", "BODYSTRUCTURE", "UID")
MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_ATOM_SAFE = re.compile(r"[!#$&'+-Z^-z|}~]+")


@dataclass(frozen=True)
class Section:
    """``[1.2.HEADER.FIELDS (A B)]``: a part path, an optional text spec, header names."""

    part: tuple[int, ...] = ()
    text: str | None = None          # one of SECTION_TEXTS, or None for the whole part
    fields: tuple[str, ...] = ()     # for HEADER.FIELDS and HEADER.FIELDS.NOT

    def spec(self) -> str:
        pieces = [".".join(map(str, self.part))] if self.part else []
        if self.text:
            pieces.append(self.text)
        out = ".".join(pieces)
        if self.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            # Dovecot answers with the names upper-cased; clients match either way.
            out += " (" + " ".join(_field_name(name.upper()) for name in self.fields) + ")"
        return out


@dataclass(frozen=True)
class Partial:
    """``<start.count>``: the octets ``[start, start + count)`` of a section."""

    start: int
    count: int

    def apply(self, data: bytes) -> bytes:
        return data[self.start:self.start + self.count]


@dataclass(frozen=True)
class FetchAttribute:
    """One requested item: a simple name, or ``BODY[section]<partial>``.

    ``name`` is one of :data:`SIMPLE` or ``"BODY[]"`` for a section fetch;
    ``peek`` marks ``BODY.PEEK`` (and RFC822.HEADER/RFC822.SIZE never set
    \\Seen either, see :attr:`sets_seen`).
    """

    name: str
    section: Section | None = None
    partial: Partial | None = None
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """Whether fetching this marks the message \\Seen (RFC 3501 §6.4.5)."""
        if self.section is not None:
            return not self.peek
        return self.name in ("RFC822", "RFC822.TEXT")

    @property
    def needs_body(self) -> bool:
        """Whether answering needs more than the header block of the message."""
        if self.section is not None:
            return not (not self.section.part and self.section.text in ("HEADER", "HEADER.FIELDS",
                                                                        "HEADER.FIELDS.NOT"))
        return self.name in ("RFC822", "RFC822.TEXT", "BODY", "BODYSTRUCTURE")

    @property
    def needs_message(self) -> bool:
        """Whether the message file must be read at all (UID, FLAGS, ... come from the index)."""
        return self.section is not None or self.name in (
            "ENVELOPE", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODY", "BODYSTRUCTURE")

    def response_name(self) -> str:
        """The item name in the FETCH response: ``BODY[HEADER.FIELDS (SUBJECT)]<0>``."""
        if self.section is None:
            return self.name
        origin = f"<{self.partial.start}>" if self.partial else ""
        return f"BODY[{self.section.spec()}]{origin}"


def _field_name(name: str) -> str:
    return name if _ATOM_SAFE.fullmatch(name) else '"' + name + '"'
