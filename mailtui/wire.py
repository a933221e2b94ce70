"""Small helpers for text that crosses the wire, one home each.

Peer-supplied text is scrubbed before it reaches a log line or the screen,
message bodies are kept with CRLF line ends (what SMTP, POP3 and IMAP send),
and endpoints are written the same way everywhere (``[v6]:port``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")   # C0, DEL, C1; surrogates = bytes not UTF-8
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")
_LINE_ENDINGS = re.compile(rb"\r\n|\r|\n")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
MAX_HEADER_BYTES = 64 * 1024
CLOSE_WAIT = 2.0          # seconds a closing connection may take (a TLS peer's close_notify) before it is dropped
SHUTDOWN_WAIT = 0.5       # the same while the server shuts down: SIGTERM must end it within seconds


def printable(text: str, *, keep_lines: bool = False) -> str:
    """``text`` made safe for logs and terminals: control characters become '?'.

    With ``keep_lines``, tabs and line feeds stay (a message shown whole).
    """
    return (_CONTROL_BUT_LINES if keep_lines else _CONTROL).sub("?", text)


def normalize_crlf(data: bytes, *, final: bool = False) -> bytes:
    """Every line ending (bare LF and bare CR too) as CRLF; with ``final``, end with one."""
    n_crlf = data.count(b"\r\n")
    if data.count(b"\n") != n_crlf or data.count(b"\r") != n_crlf:
        data = _LINE_ENDINGS.sub(b"\r\n", data)
    if final and not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data


def dot_stuff(chunk: bytes, at_line_start: bool) -> tuple[bytes, bool]:
    """Double every '.' that starts a line; returns the chunk and the new line-start flag.

    Works on consecutive chunks of one file, so lines may span chunks.
    """
    out = chunk.replace(b"\n.", b"\n..")
    if at_line_start and out.startswith(b"."):
        out = b"." + out
    return out, (chunk.endswith(b"\n") if chunk else at_line_start)


def header_section(message: bytes) -> bytes:
    """The header section of a message, without the blank line that ends it.

    A message with no body (or headers longer than 64 KiB) gives whole lines only.
    """
    match = _HEADER_END.search(message, 0, MAX_HEADER_BYTES + 4)
    if match is None:
        head = message[:MAX_HEADER_BYTES]
        if len(message) > MAX_HEADER_BYTES:
            head = head[:head.rfind(b"\n") + 1]
        return head.rstrip(b"\r\n")
    return message[:match.start()]


def hostport(host: str, port: int | str) -> str:
    """``host:port``, with an IPv6 address in brackets (``[::1]:25``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def peer_of(peername: object) -> tuple[str, str]:
    """``(ip, "ip:port")`` from a socket's peername (any address family)."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        ip = str(peername[0])
        return ip, hostport(ip, peername[1])
    text = str(peername or "?")
    return text, text


def peer_ip(ip: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A peer's address as the socket gave it, as the address it is (None if it is none).

    The scope of a link-local address (``fe80::1%eth0``) is dropped, and an IPv4
    peer on a dual-stack socket (``::ffff:192.0.2.1``) is its IPv4 address, so
    that it matches IPv4 networks and loopback.
    """
    try:
        addr = ipaddress.ip_address(ip.split("%")[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        return addr.ipv4_mapped
    return addr


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` is this machine (127.0.0.0/8, ::1, or 127.x.y.z mapped into IPv6).

    The one place a password may travel outside TLS, as Dovecot allows by default.
    """
    addr = peer_ip(ip)
    return addr is not None and addr.is_loopback


def discard_buffered(reader: object) -> int:
    """Drop plaintext a client pipelined after STARTTLS/STLS (CVE-2011-0411 class).

    Anything sent before the TLS handshake was not protected by it and must not
    be executed as if it had been. asyncio's StreamReader has no public API for
    this; its buffer is a bytearray. Call it with no ``await`` between it and
    ``start_tls`` pausing the plaintext transport, so no byte slips in between.
    """
    buffer = getattr(reader, "_buffer", None)
    if isinstance(buffer, bytearray):
        dropped = len(buffer)
        buffer.clear()
        return dropped
    return 0


async def close_stream(writer: asyncio.StreamWriter, wait: float) -> None:
    """Close a connection; drop it if it has not closed within ``wait`` seconds.

    Closing a TLS stream sends close_notify and waits for the peer's (up to
    asyncio's 30 s shutdown timeout): a client that is not reading would keep
    the connection, and a server stopping, that long.
    """
    try:
        writer.close()
        async with asyncio.timeout(wait):
            await writer.wait_closed()
    except Exception:
        writer.transport.abort()
