"""ENVELOPE, BODY and BODYSTRUCTURE (RFC 3501 §7.4.2) as plain Python data.

The results are nested lists of ``bytes`` (strings), ``int`` (numbers) and
``None`` (NIL), ready for :func:`response.encode`. Strings are the header
bytes as stored: encoded-words are not decoded (clients do that) and 8-bit
bytes pass through, so the encoder sends them as literals.
"""

from __future__ import annotations

from .addresses import parse_addresses
from .headers import Headers
from .mime import Part
from .mimefields import parse_disposition, parse_language

ImapValue = bytes | int | None | list


def envelope(headers: Headers) -> list[ImapValue]:
    """The ENVELOPE of a message (or of an encapsulated message) from its header.

    As Dovecot does, a text field given twice is reported from its last
    occurrence and an address field given twice lists the addresses of all.
    """
    def addresses(name: str):
        found = [list(address) for value in headers.all(name) for address in parse_addresses(value) or ()]
        return found or None

    sender_from = addresses("From")
    return [
        headers.last("Date"),
        headers.last("Subject"),
        sender_from,
        addresses("Sender") or sender_from,
        addresses("Reply-To") or sender_from,
        addresses("To"),
        addresses("Cc"),
        addresses("Bcc"),
        headers.last("In-Reply-To"),
        headers.last("Message-ID"),
    ]


def _params(pairs: list[tuple[bytes, bytes]]) -> list[bytes] | None:
    flat = [item for pair in pairs for item in pair]
    return flat or None


def _disposition(part: Part) -> list[ImapValue] | None:
    found = parse_disposition(part.headers.first("Content-Disposition"))
    if found is None:
        return None
    kind, params = found
    return [kind, _params(params)]


def _extension_tail(part: Part) -> list[ImapValue]:
    """body-fld-dsp, body-fld-lang and body-fld-loc, shared by all part kinds."""
    return [
        _disposition(part),
        parse_language(part.headers.first("Content-Language")),
        part.headers.first("Content-Location"),
    ]


def body_structure(part: Part, extended: bool = True) -> list[ImapValue]:
    """BODYSTRUCTURE of ``part`` (``extended=False`` gives the older BODY form)."""
    if part.is_multipart:
        out: list[ImapValue] = [body_structure(child, extended) for child in part.children]
        out.append(part.content_type.subtype)
        if extended:
            out.append(_params(part.content_type.params))
            out.extend(_extension_tail(part))
        return out
    ctype = part.content_type
    headers = part.headers
    out = [
        ctype.type, ctype.subtype, _params(ctype.params),
        headers.first("Content-ID"), headers.first("Content-Description"),
        headers.first("Content-Transfer-Encoding") or b"7bit",
        part.size,
    ]
    embedded = part.message
    if embedded is not None:
        out += [envelope(embedded.headers), body_structure(embedded, extended), part.lines]
    elif part.mime_type[0] == b"text":
        out.append(part.lines)
    if extended:
        out.append(headers.first("Content-MD5"))
        out.extend(_extension_tail(part))
    return out
