"""Waiting messages: the queue keeps an id, a due time and an arrival, and reads the rest from the spool.

Behaviour only (memory is measured in bench/): what stays in memory between
attempts, what a due or inspected message is read back as, what becomes of
one whose envelope went away or is damaged, and the index rows of waiting
messages, read from their envelopes over several throttled rounds.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from test_queue_scale import open_queue, spool_entry, unthrottle

from mailtui.store import index as index_mod
from mailtui.store.index import read_index
from mailtui.store.queue import QueueItem
from mailtui.store.waiting import Waiting

pytestmark = pytest.mark.timeout(30)


async def test_a_message_waits_small_and_is_read_back_whole_when_due(tmp_path):
    store, queue = open_queue(tmp_path)
    spool_entry(tmp_path / "spool", "DUE", "due@mx.test", due_in=-1)
    spool_entry(tmp_path / "spool", "LATER", "later@mx.test")
    await queue.start_scan()
    assert all(type(entry) is Waiting for entry in queue._items.values())

    item = queue.pop_due()
    assert isinstance(item, QueueItem) and item.id == "DUE" and item.in_flight
    assert item.recipients[0].address == "due@mx.test" and queue.pop_due() is None
    item.attempts += 1
    await queue.save(item)
    queue.schedule(item, time.time() + 60)      # not saved: the due time in memory wins
    queue.release(item)
    assert type(queue._items["DUE"]) is Waiting

    again = queue.get("DUE")
    assert again is not item and again.attempts == item.attempts
    assert again.next_attempt == item.next_attempt and queue.get("DUE") is again   # kept once read
    [oldest] = queue.items(1)
    assert oldest.id in ("DUE", "LATER") and type(queue._items[oldest.id]) is QueueItem
    store.close()


async def test_a_due_message_whose_envelope_went_away_or_broke_is_dropped_with_a_word(tmp_path):
    problems: list[str] = []
    store, queue = open_queue(tmp_path, problems)
    spool_entry(tmp_path / "spool", "GONE", due_in=-2)
    spool_entry(tmp_path / "spool", "BROKEN", due_in=-1)
    spool_entry(tmp_path / "spool", "FINE", due_in=0)
    await queue.start_scan()
    (tmp_path / "spool" / "GONE.json").unlink()
    (tmp_path / "spool" / "BROKEN.json").write_bytes(b"{cut")

    item = await asyncio.wait_for(queue.wait_due(), 5)
    assert item.id == "FINE" and len(queue) == 1
    assert any("GONE has gone" in p for p in problems)
    assert (tmp_path / "spool" / "corrupt" / "BROKEN.json").exists()
    store.close()


async def test_the_index_rows_of_waiting_messages_come_from_the_spool_over_rounds(tmp_path, monkeypatch):
    monkeypatch.setattr(index_mod, "ROUND_ROWS", 100)
    store, queue = open_queue(tmp_path)
    for n in range(1000):
        spool_entry(tmp_path / "spool", f"Q{n:05d}", f"r{n}@mx.test")
    await queue.start_scan()
    rounds = 0
    while store.queue_index.dirty:
        unthrottle(store)
        await store.flush()
        rounds += 1
        assert rounds < 50, "the rebuild does not end"
    assert rounds > 5        # 1,000 rows read back from the spool, at most ~100 a round
    rows = read_index(store.queue_index.folder)
    assert len(rows) == 1000
    assert {row["recipients"][0]["address"] for row in rows} == {f"r{n}@mx.test" for n in range(1000)}
    store.close()


async def test_queue_list_and_flush_leave_waiting_messages_small(tmp_path):
    """``queue list`` reads waiting envelopes in a worker (not on the loop, not kept); flush only
    moves their due time."""
    store, queue = open_queue(tmp_path)
    for n in range(5):
        spool_entry(tmp_path / "spool", f"W{n}", f"w{n}@mx.test")
    await queue.start_scan()
    rows = await queue.summaries(batch=2)
    assert len(rows) == 5
    assert {r["recipients"][0]["address"] for r in rows} == {f"w{n}@mx.test" for n in range(5)}
    assert all(type(entry) is Waiting for entry in queue._items.values())
    assert await queue.flush() == 5
    assert all(type(entry) is Waiting for entry in queue._items.values())
    item = queue.pop_due()
    assert isinstance(item, QueueItem) and item.next_attempt <= time.time()
    store.close()
