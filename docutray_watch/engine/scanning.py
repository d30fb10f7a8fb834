"""A folder scan that meets new files first, however many kept files the folder holds.

A folder where files are kept in place (`on_success: keep`) may hold 100,000 files already
handled, each remembered as `kept_stamp(size, mtime_ns)`. Telling whether such a file changed
takes an `lstat`; telling whether a path is new takes only a dict lookup. So the walk goes in
two passes:

1. every path not remembered as kept, with its `lstat`, as the directory listing yields it
   (a new file is nominated after one listing of the folder, not after 100,000 `lstat`s);
2. then each path remembered as kept (a snapshot of the memory, taken before pass 1): only a file
   whose stamp no longer matches — changed, or forgotten meanwhile — is yielded.

Pass 2 costs an `lstat` by path name, a little more than pass 1's by directory entry, so only
a start-up scan (where a new file waits for its first submission) takes two passes; a rescan
(`new_first=False`) checks kept files as the listing meets them, in one pass.

The kept stamps may still be being read when the walk starts (`engine/kept.py`): pass 1 then
lists the folder meanwhile and holds back what it listed until `ready` is set, since no file can
be told from a kept one before. Pass 2 checks the paths remembered when pass 1 first looks at a
stamp.

A path may come out of both passes when its stamp is forgotten between the two (or not at all,
until the next scan, when it is forgotten and then changed in the same instant): `nominate`
checks the live memory again, and takes a path once.
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from docutray_watch.intake import Candidate

__all__ = ["Found", "walk_in_chunks", "walk_new_first"]

Found = Iterator[tuple[Candidate, os.stat_result]]
_Listed = Iterator[tuple["os.DirEntry[str]", str]]
_HOLD = 4096  # entries listed ahead while the kept stamps are read
_SCAN_CHUNK = 256  # paths the walking thread hands over at a time


def walk_new_first(
    root: Path,
    *,
    recursive: bool,
    kept: Mapping[str, int],
    new_first: bool = True,
    ready: threading.Event | None = None,
) -> tuple[Found, Found]:
    """Every file below `root` (links not followed) with its lstat, in two passes: new paths,
    then kept files whose stamp in `kept` no longer matches (`new_first=False`: both in the
    first, the second empty). `kept` may change while they run (the event loop updates it): it
    is read entry by entry, its paths copied as pass 1 first looks at it. `ready`: set once
    `kept` holds the journal's stamps (None: it does already); nothing is yielded before."""
    remembered: list[str] = []
    first = _not_kept(
        root,
        recursive=recursive,
        kept=kept,
        inline=not new_first,
        ready=ready,
        remember=None if not new_first else remembered,
    )
    if not new_first:
        return first, iter(())
    return first, _changed_kept(root, remembered, recursive=recursive, kept=kept)


def walk_in_chunks(
    root: Path,
    hand_over: Callable[[list[tuple[Candidate, os.stat_result]] | None], None],
    *,
    recursive: bool,
    kept: Mapping[str, int],
    new_first: bool,
    ready: threading.Event | None,
) -> None:
    """Walk (`walk_new_first`, in a thread) and hand what is found over in chunks, then None:
    the first file at once (the first submission waits for it), the rest `_SCAN_CHUNK` at a
    time, each pass's remainder as the pass ends."""
    batch: list[tuple[Candidate, os.stat_result]] = []
    limit = 1
    passes = walk_new_first(root, recursive=recursive, kept=kept, new_first=new_first, ready=ready)
    for found in passes:
        for item in found:
            batch.append(item)
            if len(batch) >= limit:
                hand_over(batch)
                batch, limit = [], _SCAN_CHUNK
        if batch:
            hand_over(batch)
            batch = []
    hand_over(None)


def _changed_kept(
    root: Path, remembered: list[str], *, recursive: bool, kept: Mapping[str, int]
) -> Found:
    """Pass 2: the paths remembered as kept whose file is no longer the one handled."""
    base = str(root)
    head = base if base.endswith(os.sep) else base + os.sep
    for path in remembered:
        if not path.startswith(head):
            continue
        relative = path[len(head) :]
        if not recursive and os.sep in relative:
            continue
        try:
            st = os.lstat(path)
        except OSError:
            continue  # gone: nothing to take
        if stat.S_ISDIR(st.st_mode):
            continue  # a folder now: pass 1 walked it
        if kept.get(path) == (st.st_mtime_ns << 64) | st.st_size:  # `kept_stamp`, inline
            continue  # the very file handled before
        yield Candidate(Path(path), relative.replace(os.sep, "/")), st


def _listed(stack: list[tuple[str, str]], recursive: bool) -> _Listed:
    """Each entry that is not a folder, with its folder's relative prefix, depth-first,
    without building a list first; folders are pushed on `stack`, unreadable ones skipped."""
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    is_dir = entry.is_dir(follow_symlinks=False)
                except OSError:
                    continue
                if is_dir:
                    if recursive:
                        stack.append((entry.path, f"{prefix}{entry.name}/"))
                    continue
                yield entry, prefix


def _answerable(listed: _Listed, ready: threading.Event | None) -> _Listed:
    """The listing, held back until the stamps are in (listing on meanwhile, up to `_HOLD`
    entries: more would stay in the heap as fragments after the start)."""
    if ready is not None and not ready.is_set():
        held = []
        for item in listed:
            held.append(item)
            if ready.is_set():
                break
            if len(held) >= _HOLD:
                ready.wait()
                break
        else:
            ready.wait()
        yield from held
        del held
    yield from listed


def _not_kept(
    root: Path,
    *,
    recursive: bool,
    kept: Mapping[str, int],
    inline: bool,
    ready: threading.Event | None = None,
    remember: list[str] | None = None,
) -> Found:
    """Pass 1. `inline`: kept files are checked here too, as the listing meets them;
    `remember`: filled with the kept paths (for pass 2) before the first is looked at."""
    stack: list[tuple[str, str]] = [(str(root), "")]
    while stack:  # again when a file turned into a folder after the listing ended
        for entry, prefix in _answerable(_listed(stack, recursive), ready):
            if remember is not None:
                remember.extend(kept)  # atomic under the GIL: str keys run no Python code
                remember = None
            stamp = kept.get(entry.path)
            if stamp is not None and not inline:
                continue  # pass 2 looks at it
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            if stamp is not None and stamp == (st.st_mtime_ns << 64) | st.st_size:
                continue  # kept, and the very file handled before
            if stat.S_ISDIR(st.st_mode):  # (a file replaced by a folder since the listing)
                if recursive:
                    stack.append((entry.path, f"{prefix}{entry.name}/"))
                continue
            yield Candidate(Path(entry.path), f"{prefix}{entry.name}"), st
    if remember is not None:  # nothing listed: pass 2 still checks the kept paths
        if ready is not None:
            ready.wait()
        remember.extend(kept)
