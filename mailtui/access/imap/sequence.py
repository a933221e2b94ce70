"""Sequence sets (``1:4,7,*``): message numbers or UIDs a command applies to (RFC 3501 §9)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

MAX_NUMBER = 4294967295
_SEQUENCE_SET = re.compile(rb"(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?(?:,(?:[0-9]+|\*)(?::(?:[0-9]+|\*))?)*")


@dataclass(frozen=True)
class SequenceSet:
    """Ranges as written, ``None`` standing for ``*`` (the largest number in use).

    ``3:1`` and ``1:3`` are the same range; with ``largest`` known,
    :meth:`ranges` gives the ordered, resolved form.
    """

    items: tuple[tuple[int | None, int | None], ...]

    @classmethod
    def parse(cls, text: bytes | str) -> SequenceSet:
        """``1:4,7,*`` → SequenceSet; ValueError if malformed or a number is 0 or too big."""
        raw = text.encode("ascii") if isinstance(text, str) else text
        if not _SEQUENCE_SET.fullmatch(raw):
            raise ValueError("malformed sequence set")
        items = []
        for element in raw.split(b","):
            low, _, high = element.partition(b":")
            first = _number(low)
            items.append((first, _number(high) if high else first))
        return cls(tuple(items))

    def ranges(self, largest: int) -> list[tuple[int, int]]:
        """Inclusive ``(low, high)`` ranges with ``*`` = ``largest``, sorted and merged."""
        resolved = sorted(tuple(sorted((largest if a is None else a, largest if b is None else b)))
                          for a, b in self.items)
        merged: list[tuple[int, int]] = []
        for low, high in resolved:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(high, merged[-1][1]))
            else:
                merged.append((low, high))
        return merged

    def contains(self, number: int, largest: int) -> bool:
        return any(low <= number <= high for low, high in self.ranges(largest))

    def select(self, numbers: Iterable[int], largest: int) -> Iterator[int]:
        """The members of ``numbers`` (e.g. the UIDs in use) that the set names."""
        ranges = self.ranges(largest)
        return (n for n in numbers if any(low <= n <= high for low, high in ranges))

    def __str__(self) -> str:
        def one(n: int | None) -> str:
            return "*" if n is None else str(n)
        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.items)


def _number(raw: bytes) -> int | None:
    if raw == b"*":
        return None
    if len(raw) > 10 or raw.startswith(b"0"):
        raise ValueError("sequence numbers run from 1 to 4294967295")
    value = int(raw)
    if not 1 <= value <= MAX_NUMBER:
        raise ValueError("sequence numbers run from 1 to 4294967295")
    return value
