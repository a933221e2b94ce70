"""Reading DATA: the raw message up to ``<CRLF>.<CRLF>``, in large chunks, within limits.

Only the exact ``CRLF . CRLF`` sequence ends the data (a bare-LF dot is
content: SMTP smuggling), and whatever the client pipelined after it is put
back for the command loop. A message over the size limit is read to its end
and thrown away as it comes, so the session can refuse it and go on; a client
that takes longer than the DATA timeout, or hangs up, ends the session.

The stream is a small :class:`DataStream`; the session's comes from
:meth:`~mailtui.receive.aiosmtpd_compat.Engine.data_stream`, tests bring their own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from ..replies import SmtpReply
from .transaction import TOO_BIG

CHUNK = 256 * 1024
END = b"\r\n.\r\n"


class DataStream(Protocol):
    async def read(self, n: int) -> bytes:
        """Up to ``n`` bytes, at least one; ``b""`` at end of stream."""

    def unread(self, data: bytes) -> None:
        """Put ``data`` back in front of what is still to be read."""

    def alive(self) -> None:
        """A chunk arrived: the client is not idle."""


@dataclass(frozen=True, slots=True)
class DataRead:
    """What reading DATA gave: the data, a refusal, or the end of the session."""

    data: bytes = b""                   # up to the final dot, with the CRLF before it; still dot-stuffed
    refusal: SmtpReply | None = None    # read to the end but refused (too big)
    timed_out: bool = False             # the client took longer than the DATA timeout
    lost: bool = False                  # the client hung up in the middle


async def read_data(stream: DataStream, *, max_size: int, timeout: float,
                    clock: Callable[[], float] = time.monotonic) -> DataRead:
    """Read one message's data from ``stream`` (the 354 has been sent)."""
    deadline = clock() + timeout
    buf = bytearray(b"\r\n")  # the CRLF that ended the DATA command line
    scan = 0
    discarded = 0
    while True:
        if clock() > deadline:
            return DataRead(timed_out=True)
        chunk = await stream.read(CHUNK)
        if not chunk:
            return DataRead(lost=True)
        stream.alive()
        buf += chunk
        end = buf.find(END, scan)
        if end >= 0:
            leftover = bytes(buf[end + 5:])
            if leftover:
                stream.unread(leftover)  # pipelined commands after the dot
            if discarded or end > max_size:
                return DataRead(refusal=TOO_BIG)
            return DataRead(data=bytes(buf[2:end + 2]))
        scan = max(0, len(buf) - 4)
        if len(buf) - 2 > max_size + 2:
            discarded += len(buf) - 4   # keep only what could start the end marker
            del buf[:-4]
            scan = 0
