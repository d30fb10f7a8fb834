"""Files kept in place are told apart before anything is taken, while their stamps are read
during the start: a kept, unchanged file is never taken again, whichever comes first."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from docutray_watch.engine.kept import KeptStamps
from docutray_watch.engine.scanning import walk_new_first
from docutray_watch.journal import DocumentState, kept_stamp
from docutray_watch.samples import make_pdf
from tests.engine.unit.conftest import PIPELINE, Unit


def _stamp(path: Path) -> int:
    st = path.lstat()
    return kept_stamp(st.st_size, st.st_mtime_ns)


class _Arrival(threading.Event):
    """`ready` for the walk: the stamps arrive (are put into `kept`, then it is set) at the
    `at`-th look the walking thread takes at it, or when it waits — never by a clock."""

    def __init__(self, kept: dict[str, int], stamps: dict[str, int], at: int | None) -> None:
        super().__init__()
        self._kept, self._stamps, self._at, self.looks = kept, stamps, at, 0

    def _arrive(self) -> None:
        if not super().is_set():
            self._kept.update(self._stamps)
            self.set()

    def is_set(self) -> bool:
        self.looks += 1
        if self._at is not None and self.looks >= self._at:
            self._arrive()
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        self._arrive()
        return True


@pytest.mark.parametrize("recursive", [False, True])
@pytest.mark.parametrize("at", [1, 2, 5, 30, None], ids=lambda at: f"look-{at}")
def test_the_walk_yields_no_kept_file_whenever_the_stamps_arrive(
    tmp_path: Path, at: int | None, recursive: bool
) -> None:
    """Stamps arriving before the first entry is listed, after a few, after the whole listing
    (`None`: when the walk waits): pass 1 yields exactly the new files, pass 2 the changed
    kept one, never an unchanged kept file."""
    inbox = tmp_path / "inbox"
    (inbox / "sub").mkdir(parents=True)
    stamps: dict[str, int] = {}
    for index in range(20):
        kept_file = inbox / ("sub" if index % 4 == 0 else "") / f"kept-{index:02d}.pdf"
        kept_file.write_bytes(b"%PDF kept")
        stamps[str(kept_file)] = _stamp(kept_file)
    (inbox / "new.pdf").write_bytes(b"%PDF new")
    (inbox / "sub" / "new.pdf").write_bytes(b"%PDF new in sub")
    changed = inbox / "kept-01.pdf"
    changed.write_bytes(b"%PDF kept, then rewritten")
    kept: dict[str, int] = {}
    ready = _Arrival(kept, stamps, at)
    new_files, changed_kept = walk_new_first(inbox, recursive=recursive, kept=kept, ready=ready)
    taken = sorted(c.relative_path for c, _ in new_files)
    assert ready.is_set()
    assert taken == (["new.pdf", "sub/new.pdf"] if recursive else ["new.pdf"])
    assert [c.relative_path for c, _ in changed_kept] == ["kept-01.pdf"]


def test_a_rescan_before_the_stamps_arrive_waits_for_them(tmp_path: Path) -> None:
    """A one-pass scan (a rescan) holds back its listing too: no kept file comes out."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    stamps = {}
    for index in range(10):
        kept_file = inbox / f"kept-{index}.pdf"
        kept_file.write_bytes(b"%PDF kept")
        stamps[str(kept_file)] = _stamp(kept_file)
    (inbox / "new.pdf").write_bytes(b"%PDF new")
    kept: dict[str, int] = {}
    found, rest = walk_new_first(
        inbox, recursive=False, kept=kept, new_first=False, ready=_Arrival(kept, stamps, None)
    )
    assert [c.relative_path for c, _ in found] == ["new.pdf"]
    assert list(rest) == []


async def test_changes_made_while_the_stamps_are_read_win_over_the_read() -> None:
    """A stamp set or a path forgotten by the engine during the read stays so when the
    journal's older stamps arrive; `ready()` returns once they are in."""
    kept = KeptStamps(filled=False)
    waiting = asyncio.ensure_future(kept.ready())
    kept["/in/finished-meanwhile.pdf"] = 7
    kept["/in/taken-again.pdf"] = 1
    kept.pop("/in/taken-again.pdf", None)
    kept.pop("/in/released.pdf", None)
    await asyncio.sleep(0)
    assert not waiting.done()
    assert not kept.filled
    kept.fill(
        {"/in/finished-meanwhile.pdf": 3, "/in/taken-again.pdf": 3, "/in/released.pdf": 3,
         "/in/old.pdf": 5}
    )  # fmt: skip
    await asyncio.wait_for(waiting, 5)
    assert kept.filled
    assert kept.filled_event.is_set()
    assert dict(kept) == {"/in/finished-meanwhile.pdf": 7, "/in/old.pdf": 5}
    kept["/in/later.pdf"] = 9  # filled: a plain dict from now on
    assert kept.pop("/in/later.pdf") == 9


@pytest.mark.parametrize("stamps_first", [True, False], ids=["stamps-first", "offers-first"])
async def test_a_kept_file_is_never_taken_again_whichever_comes_first(
    unit: Unit, stamps_first: bool
) -> None:
    """After a restart, file-system events and the start-up scan offer a kept unchanged file,
    a kept file rewritten and a new one, before or after the kept stamps are read: the new and
    the rewritten files are taken once each, the unchanged one never."""
    keep = {"action": "keep"}
    await unit.start(on_success=keep)
    for name in ("same.pdf", "rewritten.pdf"):
        unit.drop(name)
    await unit.settled()
    assert unit.engine is not None
    await unit.engine.stop(grace=0)

    release = unit.store.hold("kept_stamps")  # the next start's read waits for this
    engine = unit.build(on_success=keep)
    await engine.start()
    if stamps_first:
        release.set()
        await engine.ctx.documents.kept[PIPELINE].ready()
    assert not stamps_first or engine.ctx.documents.kept[PIPELINE].filled
    rewritten = unit.inbox / "rewritten.pdf"
    rewritten.write_bytes(make_pdf(["rewritten, second version"]))
    os.utime(rewritten, ns=(rewritten.stat().st_atime_ns, rewritten.stat().st_mtime_ns + 10**9))
    (unit.inbox / "new.pdf").write_bytes(make_pdf(["new.pdf"]))
    offered = [engine.nominate(PIPELINE, unit.inbox / n) for n in ("same.pdf", "rewritten.pdf")]
    offered.append(engine.nominate(PIPELINE, unit.inbox / "new.pdf"))
    # Before the stamps are in, every offer is held (True) and made again once they are.
    assert offered == ([False, True, True] if stamps_first else [True, True, True])
    scan = asyncio.ensure_future(engine.scan())
    await asyncio.sleep(0.05)
    release.set()
    await asyncio.wait_for(scan, 15)
    await unit.settled()
    documents = await unit.store.documents_in(*tuple(DocumentState))
    taken = sorted(d.name for d in documents)
    assert taken == ["new.pdf", "rewritten.pdf", "rewritten.pdf", "same.pdf"]


async def _kept_run(unit: Unit) -> None:
    """A first run that keeps same.pdf in place, then stops."""
    await unit.start(on_success={"action": "keep"})
    unit.drop("same.pdf")
    await unit.settled()
    assert unit.engine is not None
    await unit.engine.stop(grace=0)


async def test_a_failed_read_of_the_stamps_is_tried_again_and_nothing_kept_is_taken(
    unit: Unit,
) -> None:
    """The first read of the kept stamps fails (disk I/O error): it is logged and tried again;
    then the new file is taken and the kept one is not."""
    await _kept_run(unit)
    unit.store.fail_next("kept_stamps")
    engine = unit.build(on_success={"action": "keep"})
    await engine.start()
    (unit.inbox / "new.pdf").write_bytes(make_pdf(["new.pdf"]))
    await asyncio.wait_for(engine.scan(), 15)
    await unit.settled()
    assert engine.ctx.documents.kept[PIPELINE].filled
    assert [call.failed for call in unit.store.calls_of("kept_stamps")][-2:] == [True, False]
    documents = await unit.store.documents_in(*tuple(DocumentState))
    assert sorted(d.name for d in documents) == ["new.pdf", "same.pdf"]


async def test_a_stop_while_the_walk_waits_for_the_stamps_ends_the_walk(unit: Unit) -> None:
    """Stopping before the kept stamps are read gives the read up: the walking thread waiting
    for them wakes (the process can end) and takes nothing."""
    await _kept_run(unit)
    release = unit.store.hold("kept_stamps")
    engine = unit.build(on_success={"action": "keep"})
    await engine.start()
    (unit.inbox / "new.pdf").write_bytes(make_pdf(["new.pdf"]))
    scan = asyncio.ensure_future(engine.scan())
    await asyncio.sleep(0.05)
    assert not scan.done()  # the walk waits for the stamps
    stopping = asyncio.ensure_future(engine.stop(grace=0))
    assert await asyncio.wait_for(scan, 10) == 0
    assert engine.ctx.documents.kept[PIPELINE].abandoned
    release.set()  # the store's held call ends (a real read on its own thread would)
    await asyncio.wait_for(stopping, 10)
    await unit.store.open()  # to look (a stopped engine closed it)
    documents = await unit.store.documents_in(*tuple(DocumentState))
    assert [d.name for d in documents] == ["same.pdf"]
