"""The MIME tree of a stored message, as byte ranges into its raw bytes.

Each :class:`Part` knows where its header starts, where its body starts and
where it ends, so section fetches are slices of the original bytes and sizes
are exact. Multipart bodies are split as RFC 2046 §5.1.1 says and as Dovecot
does: a delimiter is a line starting with ``--boundary``; the line break before
it belongs to the delimiter; the preamble and epilogue belong to no part; a
missing close delimiter ends the last part at the end of its parent. A
multipart with no boundary or no parts gets one empty text/plain child, so its
BODYSTRUCTURE stays well formed (Dovecot does the same).

Malformed MIME never raises: the worst case is a leaf part of the default type.
"""

from __future__ import annotations

import re
from functools import cached_property

from .headers import Headers, header_length
from .mimefields import ContentType, parse_content_type

MAX_DEPTH = 40        # nested multiparts/messages deeper than this are leaves
MAX_PARTS = 10000     # per message; parts past this are not split out


class Part:
    """One MIME entity: ``data[start:body_start]`` is its header, ``[body_start:end]`` its body."""

    def __init__(self, data: bytes, start: int, end: int, depth: int = 0,
                 default_type: bytes = b"text/plain", budget: list[int] | None = None):
        self.data = data
        self.start = start
        self.end = end
        self.depth = depth
        self.default_type = default_type
        self._budget = budget if budget is not None else [MAX_PARTS]
        self.body_start = start + header_length(data, start, end)

    @cached_property
    def headers(self) -> Headers:
        return Headers(self.data[self.start:self.body_start])

    @cached_property
    def content_type(self) -> ContentType:
        return parse_content_type(self.headers.first("Content-Type"), self.default_type)

    @property
    def mime_type(self) -> tuple[bytes, bytes]:
        """Lower-cased (type, subtype), for decisions; reports keep the original case."""
        return self.content_type.type.lower(), self.content_type.subtype.lower()

    @property
    def is_multipart(self) -> bool:
        return self.mime_type[0] == b"multipart" and self.depth < MAX_DEPTH

    @property
    def is_message(self) -> bool:
        """message/rfc822 (or its UTF-8 twin message/global) with an encapsulated message."""
        return self.mime_type in ((b"message", b"rfc822"), (b"message", b"global")) and self.depth < MAX_DEPTH

    @property
    def header_bytes(self) -> bytes:
        return self.data[self.start:self.body_start]

    @property
    def body_bytes(self) -> bytes:
        return self.data[self.body_start:self.end]

    @property
    def size(self) -> int:
        return self.end - self.body_start

    @property
    def lines(self) -> int:
        return self.data.count(b"\n", self.body_start, self.end)

    @cached_property
    def message(self) -> Part | None:
        """The encapsulated message of a message/rfc822 part, itself a Part."""
        if not self.is_message:
            return None
        return Part(self.data, self.body_start, self.end, self.depth + 1, budget=self._budget)

    @cached_property
    def children(self) -> list[Part]:
        """Sub-parts of a multipart; empty for anything else."""
        if not self.is_multipart:
            return []
        child_type = b"message/rfc822" if self.mime_type[1] == b"digest" else b"text/plain"
        boundary = self.boundary
        ranges = _split(self.data, self.body_start, self.end, boundary) if boundary else []
        if not ranges:
            ranges = [(self.end, self.end)]
        parts = []
        for start, end in ranges:
            if self._budget[0] <= 0:
                break
            self._budget[0] -= 1
            parts.append(Part(self.data, start, end, self.depth + 1, child_type, self._budget))
        return parts

    @property
    def boundary(self) -> bytes | None:
        for name, value in self.content_type.params:
            if name.lower() == b"boundary" and value:
                return value
        return None


def _split(data: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the parts of a multipart body ``data[start:end]``."""
    delimiter = re.compile(b"--" + re.escape(boundary))
    ranges: list[tuple[int, int]] = []
    part_start: int | None = None
    for found in delimiter.finditer(data, start, end):
        line_start = found.start()
        if line_start != start and data[line_start - 1] != 0x0A:
            continue
        if part_start is not None:
            ranges.append((part_start, max(part_start, _before_break(data, line_start, start))))
        closing = data.startswith(b"--", found.end()) and found.end() + 2 <= end
        line_end = data.find(b"\n", found.end(), end)
        part_start = end if line_end < 0 else line_end + 1
        if closing:
            return ranges
    if part_start is not None:
        ranges.append((part_start, end))
    return ranges


def _before_break(data: bytes, line_start: int, floor: int) -> int:
    """Where a part ends: before the CRLF (or LF) that precedes its delimiter line."""
    if line_start - 2 >= floor and data[line_start - 2:line_start] == b"\r\n":
        return line_start - 2
    if line_start - 1 >= floor and data[line_start - 1] == 0x0A:
        return line_start - 1
    return line_start


def walk(part: Part):
    """Every part in depth-first order, encapsulated messages included."""
    yield part
    if part.message is not None:
        yield from walk(part.message)
    for child in part.children:
        yield from walk(child)
