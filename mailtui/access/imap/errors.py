"""The one exception the parsing layer raises for anything a client sent wrong."""

from __future__ import annotations

from .response import Code, status_line


class ParseError(Exception):
    """A command the server must refuse; it carries the complete tagged reply.

    ``status`` is ``BAD`` for syntax errors; a few well-formed but unsupported
    requests are ``NO`` with a response code (``NO [BADCHARSET (UTF-8
    US-ASCII)]``). ``tag`` is ``"*"`` when no tag could be read.
    """

    def __init__(self, text: str, tag: str | None = None, status: str = "BAD", code: Code | None = None):
        super().__init__(text)
        self.text = text
        self.tag = tag or "*"
        self.status = status
        self.code = code

    def response(self) -> bytes:
        """The reply line, CRLF included: ``a1 BAD Invalid sequence set``."""
        return status_line(self.tag, self.status, self.text, self.code)

    def __repr__(self) -> str:
        return f"ParseError({self.tag} {self.status} {self.text!r})"
