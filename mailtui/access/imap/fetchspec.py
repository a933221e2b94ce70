"""FETCH attributes (RFC 3501 §6.4.5): what the client asked for, as data.

The values :func:`parse_fetch_attributes` produces, and the names the
response must echo back (``BODY.PEEK[1]<0.10>`` is answered as
``BODY[1]<0>``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .reader import Reader

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


# -- grammar -------------------------------------------------------------------
_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SPEC = re.compile(rb"[A-Za-z0-9.]*")


def parse_fetch_attributes(reader: Reader) -> tuple[FetchAttribute, ...]:
    """``ALL`` / ``FAST`` / ``FULL`` / one attribute / a parenthesised list of them."""
    if reader.peek() == b"(":
        return tuple(reader.list_of(lambda: _attribute(reader)))
    start = reader.pos
    word = reader.match(_NAME, "a FETCH attribute").decode("ascii").upper()
    if word in MACROS and reader.peek() != b"[":
        return tuple(FetchAttribute(name) for name in MACROS[word])
    reader.pos = start
    return (_attribute(reader),)


def _attribute(reader: Reader) -> FetchAttribute:
    word = reader.match(_NAME, "a FETCH attribute").decode("ascii").upper()
    if reader.peek() != b"[":
        if word not in SIMPLE:
            reader.fail(f"Unknown FETCH attribute {word}")
        return FetchAttribute(word)
    if word not in ("BODY", "BODY.PEEK"):
        reader.fail(f"{word} takes no section")
    section = _section(reader)
    partial = None
    if reader.peek() == b"<":
        reader.pos += 1
        start = reader.number()
        reader.expect(b".")
        count = reader.number(nonzero=True)
        reader.expect(b">")
        partial = Partial(start, count)
    return FetchAttribute("BODY[]", section, partial, peek=word == "BODY.PEEK")


def _section(reader: Reader) -> Section:
    reader.expect(b"[")
    spec = reader.match(_SPEC, "a section") if reader.peek() != b"]" else b""
    words = spec.decode("ascii").upper().split(".") if spec else []
    part: list[int] = []
    while words and words[0].isdigit():
        number = words.pop(0)
        if number.startswith("0") or len(number) > 10 or int(number) > 4294967295:
            reader.fail("Invalid section part number")
        part.append(int(number))
    text = ".".join(words) or None
    if text is not None and (text not in SECTION_TEXTS or (text == "MIME" and not part)):
        reader.fail(f"Invalid section {spec.decode('ascii', 'replace')}")
    if spec and spec.endswith(b".") or b".." in spec:
        reader.fail("Invalid section")
    fields: tuple[str, ...] = ()
    if text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        reader.sp()
        fields = tuple(reader.list_of(lambda: _field(reader)))
    reader.expect(b"]")
    return Section(tuple(part), text, fields)


def _field(reader: Reader) -> str:
    raw = reader.astring()
    if not raw or any(c <= 0x20 or c >= 0x7F or c == 0x3A for c in raw):
        reader.fail("Invalid header field name")
    return raw.decode("ascii")
