"""The spool's files: one file a message on arrival, a state file only after a deferral, old spools.

Behaviour of ``store/spoolfile.py`` through the real :class:`Queue` (the
kill -9 cases with a real server are in ``tests/test_spool_crash.py``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from dnsworld import MX_HOST_2, FakeMX, free_port
from send.delivery_harness import (
    LOOPBACKS,
    harnesses_fixture,  # noqa: F401 (a fixture)
    make_config,
    spool_files,
)

from mailtui.events import DeliveredRemote
from mailtui.store.queue import Queue, QueueItem, RecipientState
from mailtui.store.spoolfile import MAGIC, SpoolFiles, read_head

pytestmark = pytest.mark.timeout(60)

# 8-bit bytes, a bare LF, a line that looks like a header line, and the magic itself
BODY = b"Subject: round trip\r\n\r\n\xe2\x82\xac caf\xc3\xa9\nbare LF\r\n" + MAGIC + b'{"x": 1}\n\r\n'


async def test_a_message_arrives_as_one_file_and_reads_back_whole(tmp_path):
    queue = Queue(tmp_path / "spool")
    item = await queue.enqueue("alice@local.test", ["bob@mx.test", "carol@mx.test"], BODY,
                               peer="127.0.0.1", helo="client.test", body_8bit=True)
    assert spool_files(tmp_path) == [f"{item.id}.msg"]
    raw = (tmp_path / "spool" / f"{item.id}.msg").read_bytes()
    assert raw.startswith(MAGIC) and raw.endswith(BODY)
    assert read_head(tmp_path / "spool" / f"{item.id}.msg") == item.to_json()
    assert queue.read_body(item) == BODY

    again = Queue(tmp_path / "spool")
    assert again.load() == 1
    [back] = again.items()
    assert back.to_json() == item.to_json() and again.read_body(back.id) == BODY


async def test_the_state_file_appears_after_a_deferral_and_wins_at_the_next_start(tmp_path):
    queue = Queue(tmp_path / "spool")
    item = await queue.enqueue("alice@local.test", ["bob@mx.test", "carol@mx.test"], BODY)
    bob, carol = item.recipients
    bob.state, carol.state, carol.attempts, item.attempts = "delivered", "deferred", 1, 1
    await queue.save(item)
    assert spool_files(tmp_path) == [f"{item.id}.json", f"{item.id}.msg"]
    assert (tmp_path / "spool" / f"{item.id}.msg").read_bytes().endswith(BODY)   # never rewritten

    again = Queue(tmp_path / "spool")
    assert again.load() == 1
    [back] = again.items()
    assert [(r.address, r.state) for r in back.pending()] == [("carol@mx.test", "deferred")]
    carol.state = "delivered"
    await queue.save(item)                       # nothing pending: finished
    assert spool_files(tmp_path) == []


def old_entry(spool: Path, msg_id: str, body: bytes = BODY) -> QueueItem:
    """An entry in the two-file format of earlier versions (``<id>.eml`` + ``<id>.json``)."""
    spool.mkdir(parents=True, exist_ok=True)
    now = time.time()
    item = QueueItem(id=msg_id, sender="alice@local.test", recipients=[RecipientState("bob@mx.test")],
                     arrival=now - 60, next_attempt=now, size=len(body))
    (spool / f"{msg_id}.eml").write_bytes(body)
    (spool / f"{msg_id}.json").write_text(json.dumps(item.to_json()))
    return item


async def test_an_old_two_file_entry_keeps_its_format_until_it_is_finished(tmp_path):
    old = old_entry(tmp_path / "spool", "OLD1")
    queue = Queue(tmp_path / "spool")
    assert queue.load() == 1
    item = queue.get("OLD1")
    assert item.to_json() == old.to_json() and queue.read_body(item) == BODY
    item.recipients[0].state, item.attempts = "deferred", 1
    await queue.save(item)
    assert spool_files(tmp_path) == ["OLD1.eml", "OLD1.json"]
    assert Queue(tmp_path / "spool").load() == 1
    await queue.finish(item)
    assert spool_files(tmp_path) == []


async def test_an_old_spool_is_delivered_once_beside_new_mail(dns_world, tmp_path, harnesses):
    old_entry(tmp_path / "spool", "OLD1", b"Message-ID: <old@x>\r\n\r\nold\r\n")
    smtp_port = free_port(LOOPBACKS)
    h = harnesses(tmp_path, make_config(tmp_path, (dns_world.endpoint,), smtp_port))
    async with FakeMX(MX_HOST_2, smtp_port) as mx:
        h.start()
        new = await h.enqueue(["carol@mx.test"], body=b"Message-ID: <new@x>\r\n\r\nnew\r\n")
        await h.events.wait_for(lambda e: isinstance(e, DeliveredRemote), count=2, timeout=10)
        await h.wait_settled("OLD1")
        await h.wait_settled(new.id)
    assert sorted(m.content.rsplit(b"\r\n\r\n", 1)[1] for m in mx.messages) == [b"new\r\n", b"old\r\n"]
    assert spool_files(tmp_path) == []


@pytest.mark.parametrize("how", ["load", "scan"])
async def test_a_message_cut_short_before_its_250_is_removed_and_a_damaged_one_kept_aside(
        tmp_path, how):
    spool = tmp_path / "spool"
    files = SpoolFiles(spool)
    spool.mkdir()
    envelope = QueueItem(id="X", sender="", recipients=[RecipientState("bob@mx.test")],
                         arrival=1.0, next_attempt=1.0, size=len(BODY)).to_json()
    for msg_id, cut in (("CUTBODY", 5), ("CUTHEAD", len(BODY) + 20), ("EMPTY", None)):
        whole = MAGIC + json.dumps(dict(envelope, id=msg_id)).encode() + b"\n" + BODY
        (spool / f"{msg_id}.msg").write_bytes(b"" if cut is None else whole[:-cut])
    files.create("LONGER", dict(envelope, id="LONGER", size=3), BODY)
    files.create("GOOD", dict(envelope, id="GOOD"), BODY)
    problems: list[str] = []
    queue = Queue(spool, on_problem=problems.append)
    if how == "load":
        queue.load()
    else:
        await queue.start_scan()
    assert [i.id for i in queue.items()] == ["GOOD"]
    assert sorted(p.name for p in spool.iterdir() if p.is_file()) == ["GOOD.msg"]
    assert [p.name for p in (spool / "corrupt").iterdir()] == ["LONGER.msg"]
    assert len(problems) == 1 and "LONGER.msg unreadable" in problems[0]


async def test_a_state_file_left_by_a_finish_cut_short_is_dropped(tmp_path):
    queue = Queue(tmp_path / "spool")
    item = await queue.enqueue("alice@local.test", ["bob@mx.test"], BODY)
    item.recipients[0].state = "deferred"
    await queue.save(item)
    (tmp_path / "spool" / f"{item.id}.msg").unlink()     # finish: .msg first, then the state
    problems: list[str] = []
    assert Queue(tmp_path / "spool", on_problem=problems.append).load() == 0
    assert spool_files(tmp_path) == [] and "has no body" in problems[0]
