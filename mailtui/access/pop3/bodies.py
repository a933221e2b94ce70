"""Message bodies on the POP3 wire: dot-stuffing, streaming from a message file, TOP.

Maildir files are stored with CRLF line ends and without dot-stuffing, so
the octet counts the session announces are plain file sizes; the stuffing
is added here, chunk by chunk, while the file is read off the event loop.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import BinaryIO

from ...wire import dot_stuff

CRLF = b"\r\n"
CHUNK = 64 * 1024           # file read size for RETR


def terminator(tail: bytes) -> bytes:
    """End a multi-line body, adding the CRLF a file may lack before the final '.'."""
    if not tail or tail.endswith(CRLF):
        return b".\r\n"
    if tail.endswith(b"\r"):
        return b"\n.\r\n"
    return b"\r\n.\r\n"


async def stream_file(fh: BinaryIO, loop: asyncio.AbstractEventLoop) -> AsyncIterator[bytes]:
    """Dot-stuffed chunks of an open file, read off the event loop, then the terminator; closes ``fh``."""
    try:
        at_start, tail = True, b""
        while chunk := await loop.run_in_executor(None, fh.read, CHUNK):
            out, at_start = dot_stuff(chunk, at_start)
            tail = (tail + chunk)[-2:]
            yield out
        yield terminator(tail)
    finally:
        fh.close()


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """``data`` dot-stuffed and terminated, as a body of one chunk."""
    out, _ = dot_stuff(data, True)
    yield out + terminator(data[-2:])


def read_top(fh: BinaryIO, lines: int) -> bytes:
    """The header, the blank line and ``lines`` body lines of a message (RFC 1939 TOP); blocking, closes ``fh``."""
    out: list[bytes] = []
    with fh:
        for line in fh:
            out.append(line)
            if line in (b"\r\n", b"\n"):
                break
        else:
            return b"".join(out)
        out.extend(itertools.islice(fh, lines))
    return b"".join(out)
