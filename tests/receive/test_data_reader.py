"""The DATA reader (mailtui.receive.data) on a scripted stream: chunks, limits, timeout, put-back."""

from __future__ import annotations

import pytest

from mailtui.receive.data import CHUNK, DataRead, read_data
from mailtui.receive.transaction import TOO_BIG


class Script:
    """A DataStream that hands out the given chunks, then end of stream."""

    def __init__(self, *chunks: bytes):
        self.chunks = list(chunks)
        self.put_back = b""
        self.alive_calls = 0
        self.asked: list[int] = []

    async def read(self, n: int) -> bytes:
        self.asked.append(n)
        return self.chunks.pop(0) if self.chunks else b""

    def unread(self, data: bytes) -> None:
        self.put_back = data + self.put_back

    def alive(self) -> None:
        self.alive_calls += 1


class Clock:
    """A clock that moves ``step`` seconds every time it is read."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


async def read(*chunks: bytes, max_size: int = 100, timeout: float = 60.0, clock=None) -> tuple[DataRead, Script]:
    stream = Script(*chunks)
    result = await read_data(stream, max_size=max_size, timeout=timeout, **({"clock": clock} if clock else {}))
    return result, stream


@pytest.mark.parametrize("chunks, data, leftover", [
    ([b".\r\n"], b"", b""),                                             # an empty message
    ([b"Subject: x\r\n\r\nhi\r\n.\r\n"], b"Subject: x\r\n\r\nhi\r\n", b""),
    ([b"hi\r\n.\r\nQUIT\r\n"], b"hi\r\n", b"QUIT\r\n"),                 # pipelined after the dot
    ([b"hi\r", b"\n", b".", b"\r", b"\nRSET\r\n"], b"hi\r\n", b"RSET\r\n"),   # the marker split over reads
    ([b"a\n.\nb\r\n.\r\n"], b"a\n.\nb\r\n", b""),                       # a bare-LF dot is content
    ([b"a\r\n.\nb\r\n.\r\n"], b"a\r\n.\nb\r\n", b""),
    ([b"..leading\r\n.\r\n"], b"..leading\r\n", b""),                   # still dot-stuffed
])
async def test_reads_up_to_crlf_dot_crlf(chunks, data, leftover):
    result, stream = await read(*chunks)
    assert result == DataRead(data=data)
    assert stream.put_back == leftover
    assert stream.alive_calls == len(chunks)
    assert set(stream.asked) == {CHUNK}


@pytest.mark.parametrize("size, refused", [(100, False), (101, True), (5000, True)])
async def test_the_size_limit_counts_the_data(size, refused):
    body = b"x" * (size - 2) + b"\r\n"
    result, stream = await read(body[:40], body[40:] + b".\r\nNOOP\r\n", max_size=100)
    assert (result.refusal == TOO_BIG) is refused
    assert result.data == (b"" if refused else body)
    assert stream.put_back == b"NOOP\r\n"   # the session goes on after a refusal


async def test_a_huge_message_is_read_to_its_end_in_bounded_memory():
    chunk = b"y" * 10_000 + b"\r\n"
    result, stream = await read(*([chunk] * 50), b".\r\n", max_size=1000)
    assert result.refusal == TOO_BIG and stream.chunks == []


async def test_a_hang_up_in_the_middle_is_lost():
    result, _ = await read(b"half a mess")
    assert result == DataRead(lost=True)


async def test_a_slow_client_times_out_between_chunks():
    result, stream = await read(b"a", b"b", b"c\r\n.\r\n", timeout=2.5, clock=Clock(1.0))
    assert result == DataRead(timed_out=True)
    assert stream.chunks == [b"c\r\n.\r\n"]   # checked before each read, not in the middle of one
