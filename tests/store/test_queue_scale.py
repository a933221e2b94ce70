"""The queue at scale: the sharded index, and the spool scan that runs while mail flows.

Behaviour only (performance is measured in bench/): which shard files a
change rewrites, what a damaged or stale shard becomes, that a big index
write lets the loop run between its chunks, that every kind of spool file is
handled the same by the background scan and the blocking load, and that a
server whose scan has not finished accepts mail and still delivers what the
scan finds later.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import smtplib
import threading
import time
from pathlib import Path

import pytest
from dnsworld import MX_HOST_2, FakeMX, free_port
from harness import RunningServer
from harness import make_config as harness_config
from harness import mailtui, write_config
from send.delivery_harness import LOOPBACKS, Dsns, make_config
from tinydb import TinyDB

from mailtui.dns.resolver import Resolver
from mailtui.events import EventBus
from mailtui.send.attempt import TransferAgent
from mailtui.send.scheduler import Scheduler
from mailtui.store import index as index_mod
from mailtui.store.db import Store
from mailtui.store.index import (
    HEAD,
    TAIL,
    ShardDamaged,
    read_index,
    read_shard,
    shard_name,
    shard_of,
    split_shard,
)
from mailtui.store.queue import Queue, QueueItem, RecipientState
from mailtui.store.spoolscan import SpoolScan

pytestmark = pytest.mark.timeout(60)

BODY = b"Subject: scale\r\n\r\nhello\r\n"


def spool_entry(spool: Path, msg_id: str, rcpt: str = "bob@mx.test", *, state: str = "deferred",
                due_in: float = 7 * 86400) -> None:
    """An entry written the way the queue writes it (as after an earlier run)."""
    spool.mkdir(parents=True, exist_ok=True)
    now = time.time()
    item = QueueItem(id=msg_id, sender="alice@local.test",
                     recipients=[RecipientState(rcpt, state=state, attempts=1, updated=now)],
                     arrival=now - 60, next_attempt=now + due_in, size=len(BODY), attempts=1)
    (spool / f"{msg_id}.eml").write_bytes(BODY)
    (spool / f"{msg_id}.json").write_text(json.dumps(item.to_json()))


def open_queue(tmp_path: Path, problems: list[str] | None = None) -> tuple[Store, Queue]:
    on_problem = problems.append if problems is not None else None
    store = Store(tmp_path / "data", on_problem=on_problem)
    return store, Queue(tmp_path / "spool", store=store, on_problem=on_problem)


def shard_inodes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_ino for p in folder.glob("*.json")}


def unthrottle(store: Store) -> None:
    """Let the next index write run now (it otherwise waits 20 times the cost of the last)."""
    store.queue_index._not_before = 0.0


def ids_in_shard(count: int, shard: int) -> list[str]:
    return [f"Q{n:08d}" for n in range(100_000) if shard_of(f"Q{n:08d}") == shard][:count]


# -- the index --------------------------------------------------------------------------------

def test_a_change_rewrites_only_its_shard(tmp_path):
    for n in range(40):
        spool_entry(tmp_path / "spool", f"Q{n:08d}")
    store, queue = open_queue(tmp_path)
    assert queue.load() == 40
    store.flush_sync()
    folder = store.queue_index.folder
    assert {p.name for p in folder.glob("*.json")} == {shard_name(shard_of(i.id)) for i in queue.items()}
    assert [row["id"] for row in read_index(folder)] == [i.id for i in queue.items()]
    before = shard_inodes(folder)

    item = queue.get("Q00000007")
    queue.schedule(item, time.time() + 60)
    store.flush_sync()
    after = shard_inodes(folder)
    assert {name for name in after if after[name] != before[name]} == {shard_name(shard_of(item.id))}
    row = read_shard(folder / shard_name(shard_of(item.id)))[item.id]
    assert row["next_attempt"] == item.next_attempt and row["recipients"][0]["state"] == "deferred"
    with TinyDB(folder / shard_name(shard_of(item.id)), access_mode="r") as db:   # any TinyDB reader
        assert item.id in {doc["id"] for doc in db.table("queue").all()}


ROW = b'{"id":"A1","sender":"x"}'


@pytest.mark.parametrize("raw, rows", [
    (b"", {}),
    (HEAD + b'"1":' + ROW + TAIL, {"A1": ROW}),
    (HEAD + b'"1":' + ROW + b',\n"2":{"id":"B2"}' + TAIL, {"A1": ROW, "B2": b'{"id":"B2"}'}),
    (HEAD + b'"1":' + ROW, ShardDamaged),                                 # cut before its end
    (HEAD + b'"1":{"id":"A1","sen' + TAIL, ShardDamaged),                 # a row cut
    (HEAD + b'"1":{"sender":"x"}' + TAIL, ShardDamaged),                  # a row without its id first
    (b"\x00garbage{{{", ShardDamaged),
])
def test_a_shard_is_split_into_rows_without_parsing_them(raw, rows):
    if rows is ShardDamaged:
        with pytest.raises(ShardDamaged):
            split_shard(raw)
    else:
        assert split_shard(raw) == rows


async def test_a_finished_entry_leaves_the_index(tmp_path):
    store, queue = open_queue(tmp_path)
    kept = await queue.enqueue("a@local.test", ["x@mx.test"], BODY)
    gone = await queue.enqueue("a@local.test", ["y@mx.test"], BODY)
    assert queue.indexing
    await store.flush()
    assert not queue.indexing
    assert {r["id"] for r in read_index(store.queue_index.folder)} == {kept.id, gone.id}
    await queue.finish(gone)
    unthrottle(store)
    await store.flush()
    assert [r["id"] for r in read_index(store.queue_index.folder)] == [kept.id]


def test_rows_left_by_an_earlier_run_do_not_survive(tmp_path):
    """A kill -9 between a delivery and the next index write leaves a row for a message that is gone."""
    spool_entry(tmp_path / "spool", "Q00000001")
    folder = tmp_path / "data" / "queue-index"
    folder.mkdir(parents=True)
    ghost = {"id": "GHOST", "sender": "", "arrival": 1.0, "recipients": []}
    for shard in {shard_of("GHOST"), shard_of("Q00000001")}:
        (folder / shard_name(shard)).write_text(json.dumps({"queue": {"1": ghost}}))
    (folder / ".00.json.1234abcd.tmp").write_bytes(b"half a wri")      # a write cut off by the kill
    store, queue = open_queue(tmp_path)
    queue.load()
    store.flush_sync()
    assert [r["id"] for r in read_index(folder)] == ["Q00000001"]
    assert not list(folder.glob(".*"))


async def test_a_damaged_shard_is_reported_and_rebuilt_from_the_queue(tmp_path):
    problems: list[str] = []
    victim = 17
    ids = ids_in_shard(5, victim)
    for msg_id in ids:
        spool_entry(tmp_path / "spool", msg_id)
    store, queue = open_queue(tmp_path, problems)
    queue.load()
    await store.flush()
    path = store.queue_index.folder / shard_name(victim)
    assert set(read_shard(path)) == set(ids)

    path.write_bytes(b"\x00garbage{{{")                                 # damaged while we run
    queue.schedule(queue.get(ids[0]), time.time() + 5)                 # one row of that shard changes
    unthrottle(store)
    await store.flush()
    assert any(f"queue index {shard_name(victim)} was unreadable" in p for p in problems)
    unthrottle(store)
    await store.flush()
    assert set(read_shard(path)) == set(ids)                            # every row is back


async def test_a_big_index_write_lets_the_loop_run_between_chunks(tmp_path, monkeypatch):
    monkeypatch.setattr(index_mod, "CHUNK", 50)
    store, queue = open_queue(tmp_path)
    for n in range(1000):
        spool_entry(tmp_path / "spool", f"Q{n:08d}")
    queue.load()
    ticks = 0
    running = True

    async def ticker() -> None:
        nonlocal ticks
        while running:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    first = ticks
    await store.flush()
    during = ticks - first
    running = False
    await task
    # 1,000 ids to sort into shards, 1,000 rows: at least 30 chunks, each followed by a yield
    assert during >= 30
    assert len(read_index(store.queue_index.folder)) == 1000


async def test_an_index_write_cut_off_by_shutdown_is_written_at_close(tmp_path, monkeypatch):
    monkeypatch.setattr(index_mod, "CHUNK", 10)
    store, queue = open_queue(tmp_path)
    for n in range(200):
        spool_entry(tmp_path / "spool", f"Q{n:08d}")
    queue.load()
    task = asyncio.create_task(store.flush())
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()                                                       # mid-way, as Core.stop does
    with pytest.raises(asyncio.CancelledError):
        await task
    store.close()
    assert len(read_index(store.queue_index.folder)) == 200


# -- the spool scan ---------------------------------------------------------------------------

def leftovers(spool: Path) -> None:
    """One file of every kind a crash or a damaged disk can leave."""
    spool_entry(spool, "GOOD1")
    spool_entry(spool, "GOOD2", due_in=-1)
    spool_entry(spool, "DONE", state="delivered")                     # finished, files not yet removed
    spool_entry(spool, "BROKEN")
    (spool / "BROKEN.json").write_bytes(b"{not json")
    spool_entry(spool, "NOBODY")
    (spool / "NOBODY.eml").unlink()
    (spool / "ORPHAN.eml").write_bytes(BODY)                           # body written, envelope not yet
    temp = spool / ".GOOD1.json.0badcafe.tmp"                           # a save cut off mid-write
    temp.write_bytes(b"{")
    os.utime(temp, (time.time() - 3600, time.time() - 3600))


@pytest.mark.parametrize("how", ["load", "scan"])
async def test_the_scan_and_the_blocking_load_handle_every_kind_of_file(tmp_path, how):
    spool = tmp_path / "spool"
    leftovers(spool)
    problems: list[str] = []
    _, queue = open_queue(tmp_path, problems)
    if how == "load":
        queue.load()
    else:
        done: list[tuple[int, float]] = []
        await asyncio.wait_for(queue.start_scan(lambda n, s: done.append((n, s))), 10)
        assert done and done[0][0] == 2 and not queue.scanning
    assert sorted(i.id for i in queue.items()) == ["GOOD1", "GOOD2"]
    assert sorted(p.name for p in spool.iterdir() if p.is_file()) == [
        "GOOD1.eml", "GOOD1.json", "GOOD2.eml", "GOOD2.json"]
    assert sorted(p.name for p in (spool / "corrupt").iterdir()) == ["BROKEN.eml", "BROKEN.json"]
    assert any("NOBODY.json has no body" in p for p in problems)
    assert any("BROKEN.json unreadable" in p for p in problems)
    assert queue.pop_due().id == "GOOD2"


class Gate:
    """Holds the spool scan after its first batch until opened (a slow disk, on cue)."""

    def __init__(self, monkeypatch, batch: int = 2):
        self.open = threading.Event()
        self.batches = 0
        real = SpoolScan.next_batch

        def next_batch(scan: SpoolScan):
            scan.batch = batch
            self.batches += 1
            if self.batches > 1:
                assert self.open.wait(20), "the gate was never opened"
            return real(scan)

        monkeypatch.setattr(SpoolScan, "next_batch", next_batch)


async def test_mail_flows_while_the_scan_runs_and_what_it_finds_later_is_delivered(
        dns_world, tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    old = [f"OLD{n:04d}" for n in range(6)]
    for msg_id in old:
        spool_entry(spool, msg_id, rcpt=f"{msg_id.lower()}@mx.test", due_in=-1)
    gate = Gate(monkeypatch)
    smtp_port = free_port(LOOPBACKS)
    config = make_config(tmp_path, (dns_world.endpoint,), smtp_port)
    bus = EventBus()
    store = Store(tmp_path / "db")
    queue = Queue(spool, store=store)
    transfer = TransferAgent(config=config, queue=queue, resolver=Resolver(config.dns.nameservers, 1.0, bus, store),
                             bus=bus, submit=Dsns().submit, store=store)
    agent = Scheduler(config=config, queue=queue, bus=bus, transfer=transfer, stop_grace=1.0)
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        scan = queue.start_scan()
        run = asyncio.create_task(agent.run())
        try:
            async with asyncio.timeout(20):
                while gate.batches < 2:                                  # the scan is held in its second batch
                    await asyncio.sleep(0.01)
                assert queue.scanning and len(queue) <= 2
                new = await queue.enqueue("alice@local.test", ["new@mx.test"], BODY)
                while not any(m.rcpt_tos == ["new@mx.test"] for m in mx.messages):
                    await asyncio.sleep(0.02)
                assert queue.scanning                                    # delivered before the scan ended
                gate.open.set()
                await scan
                while len(queue) or len(mx.messages) < len(old) + 1:
                    await asyncio.sleep(0.02)
        finally:
            gate.open.set()
            await agent.stop()
            await run
    delivered = sorted(r for m in mx.messages for r in m.rcpt_tos)
    assert delivered == sorted([f"{i.lower()}@mx.test" for i in old] + ["new@mx.test"])  # each once
    assert not [p for p in spool.iterdir() if p.is_file()] and queue.get(new.id) is None


def test_the_server_accepts_mail_before_its_scan_ends_and_queue_list_says_so(tmp_path, monkeypatch):
    data = tmp_path / "data"
    for n in range(6):
        spool_entry(data / "spool", f"OLD{n:04d}")
    gate = Gate(monkeypatch)
    server = RunningServer(harness_config(data, delivery={"retry_intervals": [3600]})).start()
    try:
        server.add_client("here", "127.0.0.0/8")
        server.wait_for(lambda: gate.batches >= 2, what="the scan to be held")
        with smtplib.SMTP("127.0.0.1", server.smtp_port, timeout=10) as c:
            c.sendmail("a@local.test", ["far@remote.test"], BODY)     # a 250 while the scan runs
        cfg = write_config(tmp_path / "c.toml", data)
        listed = mailtui("queue", "list", config=cfg)
        status = server.run(server.core.admin.call("queue_status", {}))
        gate.open.set()
        server.wait_for(lambda: not server.core.queue.scanning, what="the scan to end")
        after = json.loads(mailtui("queue", "list", "--json", config=cfg).stdout)
    finally:
        gate.open.set()
        server.stop()
    assert listed.returncode == 0 and "still scanning its spool" in listed.stdout
    assert status["scanning"] is True and 1 <= status["queued"] <= 3
    assert len(after) == 7
    assert any("picked up from the spool" in getattr(e, "text", "") for e in server.events)


async def test_a_big_scan_puts_its_entries_out_of_the_collectors_reach(tmp_path, monkeypatch):
    from mailtui.store import queueload
    monkeypatch.setattr(queueload, "FREEZE_EVERY", 20)
    for n in range(50):
        spool_entry(tmp_path / "spool", f"Q{n:08d}")
    _, queue = open_queue(tmp_path)
    gc.unfreeze()
    try:
        await queue.start_scan()
        assert len(queue) == 50 and gc.get_freeze_count() > 0
        frozen = gc.get_freeze_count()
        _, small = open_queue(tmp_path / "small")
        spool_entry(tmp_path / "small" / "spool", "ONE")
        await small.start_scan()                                         # under FREEZE_EVERY: no freeze
        assert len(small) == 1 and gc.get_freeze_count() <= frozen          # (freed ones leave it)
    finally:
        gc.unfreeze()
