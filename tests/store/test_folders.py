"""The IMAP/POP3 mail store: durable UIDs, flags in file names, Maildir++ folders, a shared cache."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from mailtui.store import uidlist
from mailtui.store.folder import FolderGone
from mailtui.store.mailboxes import FolderError, MailStore, check_name
from mailtui.store.maildir import Maildirs

KEY = "alice@localhost"
MSG = b"Subject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def maildirs(tmp_path):
    return Maildirs(tmp_path / "mail")


@pytest.fixture
def store(maildirs):
    return MailStore(maildirs)


def deliver(maildirs: Maildirs, n: int = 1) -> list[Path]:
    return [maildirs.deliver_sync(KEY, MSG + b"%d\r\n" % i) for i in range(n)]


def box(maildirs: Maildirs) -> Path:
    return maildirs.path_for(KEY)


async def test_first_look_gives_uids_in_arrival_order_and_moves_new_to_cur(store, maildirs):
    deliver(maildirs, 3)
    folder = await store.open(KEY, "INBOX")
    assert list(folder.uids) == [1, 2, 3]
    assert folder.uidvalidity > 0 and folder.uid_next == 4
    assert not os.listdir(box(maildirs) / "new")
    assert sorted(n.endswith(":2,") for n in os.listdir(box(maildirs) / "cur")) == [True] * 3
    assert (await folder.read(2)).startswith(b"Subject: hi")


async def test_uids_survive_a_new_store_and_new_mail_goes_above_them(maildirs):
    deliver(maildirs, 3)
    first = MailStore(maildirs)
    folder = await first.open(KEY, "INBOX")
    validity = folder.uidvalidity
    await folder.expunge([3])
    await folder.store([1], "add", ["\\Seen", "$Work"])
    deliver(maildirs, 1)
    second = await MailStore(maildirs).open(KEY, "INBOX")      # as after a restart
    assert second.uidvalidity == validity
    assert list(second.uids) == [1, 2, 4]
    assert second.flags_at(0) == ("\\Seen", "$Work")


async def test_a_delivery_poke_wakes_watchers_with_the_new_uid(store, maildirs):
    deliver(maildirs, 1)
    folder = await store.open(KEY, "INBOX")
    woke = asyncio.Event()
    folder.watch("s", woke.set)
    deliver(maildirs, 1)
    store.poke(KEY)
    await asyncio.wait_for(woke.wait(), 2)
    await asyncio.sleep(0)
    assert list(folder.uids) == [1, 2]


async def test_changes_on_disk_are_found_by_the_next_look(store, maildirs):
    deliver(maildirs, 2)
    folder = await store.open(KEY, "INBOX")
    cur = box(maildirs) / "cur"
    first, second = sorted(os.listdir(cur))
    os.rename(cur / first, cur / (first + "S"))
    os.unlink(cur / second)
    os.utime(cur, ns=(1, 1))       # a different mtime, whatever the clock's resolution
    await folder.refresh()
    assert list(folder.uids) == [1]
    assert folder.flags_at(0) == ("\\Seen",)
    assert [(c.kind, c.uid) for c in folder.changes_since(folder.version - 2)] == [("flags", 1), ("expunge", 2)]


async def test_append_copy_move_keep_flags_and_dates(store, maildirs):
    inbox = await store.open(KEY, "INBOX")
    store.user(KEY).create("Archive.2026")
    archive = await store.open(KEY, "Archive.2026")
    uid = await inbox.append(MSG, ["\\Flagged"], when=1_000_000_000.0)
    assert uid == 1 and inbox.dates[0] == 1_000_000_000.0
    assert await inbox.copy_to(archive, [1]) == [(1, 1)]
    assert await inbox.copy_to(archive, [1], move=True) == [(1, 2)]
    assert len(inbox) == 0 and list(archive.uids) == [1, 2]
    assert archive.flags_at(1) == ("\\Flagged",) and archive.dates[1] == 1_000_000_000.0
    again = await MailStore(maildirs).open(KEY, "Archive.2026")
    assert list(again.uids) == [1, 2] and again.dates[0] == 1_000_000_000.0


async def test_a_torn_uidlist_line_is_ignored_and_the_file_rewritten(store, maildirs):
    deliver(maildirs, 2)
    folder = await store.open(KEY, "INBOX")
    path = box(maildirs) / uidlist.FILE_NAME
    with open(path, "ab") as fh:
        fh.write(b"3 :half-writ")
    again = await MailStore(maildirs).open(KEY, "INBOX")
    assert list(again.uids) == [1, 2]
    deliver(maildirs, 1)
    await again.refresh()
    assert list(again.uids) == [1, 2, 3]
    assert path.read_bytes().endswith(b"\n") and b"half-writ" not in path.read_bytes()
    assert folder.uidvalidity == again.uidvalidity


def test_uidlist_parse_is_strict():
    assert uidlist.parse(b"junk\n1 :a\n") is None
    loaded = uidlist.parse(b"mailtui-uidlist 1 V7 N3\n1 :a\n5 S10 T2.5 :b c\n4 :d\n")
    assert loaded.uid_next == 6 and not loaded.clean
    assert [(e.uid, e.name, e.size, e.when) for e in loaded.entries] == [(1, "a", None, None), (5, "b c", 10, 2.5)]


@pytest.mark.parametrize("name", ["..", "a..b", ".a", "a.", "~root", "#users.bob", "/etc", "a/b",
                                  "a*", "%", "x" * 300, "caf\u00e9"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(FolderError):
        check_name(name)


def test_inbox_in_any_case_is_inbox():
    assert check_name("iNbOx") == "INBOX" and check_name("inbox.Sub") == "INBOX.Sub"


async def test_folders_create_rename_delete_and_special_use(store, maildirs):
    user = store.user(KEY)
    user.ensure_special()
    assert user.names() == ["INBOX", "Drafts", "Junk", "Sent", "Trash"]
    assert (box(maildirs) / ".Sent" / "maildirfolder").exists()
    user.create("a.b.c")
    assert {"a", "a.b", "a.b.c"} <= set(user.names())
    with pytest.raises(FolderError):
        user.create("a.b")
    user.rename("a", "z")
    assert "z.b.c" in user.names() and "a" not in user.names()
    with pytest.raises(FolderError):
        user.delete("z")               # has children
    user.delete("z.b.c")
    assert "z.b.c" not in user.names()
    with pytest.raises(FolderGone):
        await store.open(KEY, "z.b.c")


async def test_recreated_folder_gets_a_larger_uidvalidity(store):
    user = store.user(KEY)
    user.create("Box")
    first = await store.open(KEY, "Box")
    store.release(first, KEY)
    user.delete("Box")
    store.forget(KEY, "Box")
    user.create("Box")
    second = await store.open(KEY, "Box")
    assert second.uidvalidity > first.uidvalidity


def test_reads_from_the_page_cache_never_wait(tmp_path):
    from mailtui.store.mailfiles import read_cached
    path = tmp_path / "m"
    path.write_bytes(b"x" * 5000)
    assert read_cached(str(path), 5000) in (b"x" * 5000, None)     # None where RWF_NOWAIT is missing
    assert read_cached(str(path), 4000) is None                     # the file is not the size we think
    assert read_cached(str(tmp_path / "gone"), 10) is None
