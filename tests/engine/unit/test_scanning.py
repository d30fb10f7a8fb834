"""The start-up scan meets new files before it checks the files kept in place."""

from __future__ import annotations

from pathlib import Path

from docutray_watch.engine.scanning import walk_new_first
from docutray_watch.journal import kept_stamp


def _stamp(path: Path) -> int:
    st = path.lstat()
    return kept_stamp(st.st_size, st.st_mtime_ns)


def _kept_folder(tmp_path: Path, count: int) -> tuple[Path, dict[str, int]]:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    kept: dict[str, int] = {}
    for index in range(count):
        file = inbox / f"kept-{index:03d}.pdf"
        file.write_bytes(b"%PDF kept")
        kept[str(file)] = _stamp(file)
    return inbox, kept


def test_new_files_come_out_of_the_first_pass_and_unchanged_kept_files_never(
    tmp_path: Path,
) -> None:
    """Pass 1 yields exactly the paths not remembered as kept (no lstat of a kept file needed);
    pass 2 yields nothing while every kept file is the one handled."""
    inbox, kept = _kept_folder(tmp_path, 50)
    (inbox / "new.pdf").write_bytes(b"%PDF new")
    new_files, changed_kept = walk_new_first(inbox, recursive=False, kept=kept)
    assert [c.relative_path for c, _ in new_files] == ["new.pdf"]
    assert list(changed_kept) == []


def test_a_kept_file_rewritten_or_forgotten_comes_out_of_the_second_pass(tmp_path: Path) -> None:
    """A kept file whose size or mtime changed, or whose stamp was forgotten after the walk
    began, is yielded with its relative path and lstat; one deleted is not."""
    inbox, kept = _kept_folder(tmp_path, 5)
    (inbox / "kept-000.pdf").write_bytes(b"%PDF rewritten, longer")
    (inbox / "kept-001.pdf").unlink()
    new_files, changed_kept = walk_new_first(inbox, recursive=False, kept=kept)
    assert list(new_files) == []
    del kept[str(inbox / "kept-002.pdf")]  # forgotten between the passes (e.g. released)
    found = {c.relative_path: st.st_size for c, st in changed_kept}
    assert found == {"kept-000.pdf": 22, "kept-002.pdf": 9}


def test_subfolders_are_walked_only_when_recursive(tmp_path: Path) -> None:
    """New files in a subfolder come out of pass 1, changed kept ones of pass 2, with
    slash-separated relative paths; neither when the pipeline is not recursive."""
    inbox, kept = _kept_folder(tmp_path, 1)
    sub = inbox / "a" / "b"
    sub.mkdir(parents=True)
    (sub / "new.pdf").write_bytes(b"%PDF new")
    (sub / "old.pdf").write_bytes(b"%PDF old")
    kept[str(sub / "old.pdf")] = _stamp(sub / "old.pdf") + 1  # not the file handled
    new_files, changed_kept = walk_new_first(inbox, recursive=True, kept=kept)
    assert [c.relative_path for c, _ in new_files] == ["a/b/new.pdf"]
    assert [c.relative_path for c, _ in changed_kept] == ["a/b/old.pdf"]
    flat = walk_new_first(inbox, recursive=False, kept=kept)
    assert [list(found) for found in flat] == [[], []]


def test_a_kept_path_that_became_a_folder_is_walked_not_taken(tmp_path: Path) -> None:
    """A folder where a kept file was is walked by pass 1 and never yielded itself."""
    inbox, kept = _kept_folder(tmp_path, 1)
    folder = inbox / "kept-000.pdf"
    folder.unlink()
    folder.mkdir()
    (folder / "inside.pdf").write_bytes(b"%PDF inside")
    new_files, changed_kept = walk_new_first(inbox, recursive=True, kept=kept)
    assert [c.relative_path for c, _ in new_files] == ["kept-000.pdf/inside.pdf"]
    assert list(changed_kept) == []


def test_an_unreadable_folder_is_skipped(tmp_path: Path) -> None:
    """A missing root yields nothing from either pass instead of raising."""
    new_files, changed_kept = walk_new_first(tmp_path / "missing", recursive=True, kept={})
    assert list(new_files) == list(changed_kept) == []


def test_a_rescan_checks_kept_files_in_one_pass(tmp_path: Path) -> None:
    """`new_first=False` (every scan after the first): the listing yields new files and changed
    kept files alike, leaves unchanged kept files out, and the second pass is empty."""
    inbox, kept = _kept_folder(tmp_path, 3)
    (inbox / "kept-001.pdf").write_bytes(b"%PDF rewritten, longer")
    (inbox / "new.pdf").write_bytes(b"%PDF new")
    one_pass, second = walk_new_first(inbox, recursive=False, kept=kept, new_first=False)
    assert sorted(c.relative_path for c, _ in one_pass) == ["kept-001.pdf", "new.pdf"]
    assert list(second) == []
