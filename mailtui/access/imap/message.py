"""A stored message, parsed only as far as each question needs.

:class:`MessageView` is what the session layer builds for a message it must
read. The cost ladder, cheapest first:

* UID, FLAGS, INTERNALDATE, RFC822.SIZE: never build a view (the store knows).
* ENVELOPE, ``BODY[HEADER...]``, RFC822.HEADER, header SEARCH keys: only the
  header block, which a store can read alone with
  :func:`headers.read_header` and pass as ``load_header``.
* BODYSTRUCTURE, sections, BODY/TEXT SEARCH: the whole message, split into
  MIME parts lazily (a part's children are found when first asked for).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

from .fetchspec import Partial, Section
from .headers import Headers, header_length
from .mime import Part
from .structure import ImapValue, body_structure, envelope

Loader = Callable[[], bytes]


class MessageView:
    """Read-only, lazily parsed view of one message's raw bytes (CRLF line ends)."""

    def __init__(self, load: Loader | bytes, load_header: Loader | None = None):
        if isinstance(load, (bytes, bytearray)):
            data = bytes(load)
            self._load: Loader = lambda: data
        else:
            self._load = load
        self._load_header = load_header

    @cached_property
    def raw(self) -> bytes:
        """The whole message, loaded on first use."""
        return self._load()

    @cached_property
    def header_block(self) -> bytes:
        """The top-level header, blank line included, loaded alone when possible."""
        if "raw" not in self.__dict__ and self._load_header is not None:
            block = self._load_header()
            return block[:header_length(block)]
        return self.raw[:header_length(self.raw)]

    @cached_property
    def headers(self) -> Headers:
        return Headers(self.header_block)

    @cached_property
    def root(self) -> Part:
        """The top-level MIME entity; its tree is parsed on demand."""
        return Part(self.raw, 0, len(self.raw))

    def envelope(self) -> list[ImapValue]:
        return envelope(self.headers)

    def body_structure(self, extended: bool = True) -> list[ImapValue]:
        return body_structure(self.root, extended)

    def part(self, path: tuple[int, ...]) -> Part | None:
        """The entity a section part path names, or None if there is no such part.

        From a multipart, part ``n`` is its ``n``-th child; from a
        message/rfc822 part we continue in the encapsulated message (RFC 3501
        §6.4.5). A single-part entity is its own part 1 -- once: Dovecot
        answers ``BODY[2.1]`` with leaf part 2 but ``BODY[2.1.1]`` (and
        ``BODY[1.1]`` of a single-part message) with nothing, and so do we.
        """
        current, in_message, stayed = self.root, True, False
        for number in path:
            if not in_message and current.message is not None:
                current, in_message, stayed = current.message, True, False
            if current.is_multipart:
                children = current.children
                if not 0 < number <= len(children):
                    return None
                current, in_message, stayed = children[number - 1], False, False
            elif number == 1 and not stayed:
                in_message, stayed = False, True
            else:
                return None
        return current

    def section(self, section: Section) -> bytes:
        """The bytes of ``BODY[section]``; empty when there is no such part (as Dovecot answers).

        HEADER, HEADER.FIELDS[.NOT] and TEXT of a numbered part only exist when
        that part is a message/rfc822; of anything else they are empty.
        """
        if not section.part:
            return _text_of(self.root, section) if section.text else self.raw
        entity = self.part(section.part)
        if entity is None:
            return b""
        if section.text is None:
            return entity.body_bytes
        if section.text == "MIME":
            return entity.header_bytes
        return b"" if entity.message is None else _text_of(entity.message, section)

    def fetch_section(self, section: Section, partial: Partial | None = None) -> bytes:
        """``BODY[section]<partial>`` contents; header-only sections skip the body."""
        if not section.part and section.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"):
            data = _header_text(self.headers, section)
        else:
            data = self.section(section)
        return data if partial is None else partial.apply(data)


def _header_text(headers: Headers, section: Section) -> bytes:
    if section.text == "HEADER":
        return headers.block
    return headers.select(section.fields, exclude=section.text == "HEADER.FIELDS.NOT")


def _text_of(message: Part, section: Section) -> bytes:
    """HEADER / HEADER.FIELDS[.NOT] / TEXT of a message entity."""
    if section.text == "TEXT":
        return message.body_bytes
    return _header_text(message.headers, section)
