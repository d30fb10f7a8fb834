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

A path may come out of both passes when its stamp is forgotten between the two (or not at all,
until the next scan, when it is forgotten and then changed in the same instant): `nominate`
checks the live memory again, and takes a path once.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path

from docutray_watch.intake import Candidate

__all__ = ["Found", "walk_new_first"]

Found = Iterator[tuple[Candidate, os.stat_result]]


def walk_new_first(
    root: Path, *, recursive: bool, kept: Mapping[str, int], new_first: bool = True
) -> tuple[Found, Found]:
    """Every file below `root` (links not followed) with its lstat, in two passes: new paths,
    then kept files whose stamp in `kept` no longer matches (`new_first=False`: both in the
    first, the second empty). `kept` may change while they run (the event loop updates it): it
    is read entry by entry, its paths copied before pass 1."""
    if not new_first:
        return _not_kept(root, recursive=recursive, kept=kept, inline=True), iter(())
    remembered = list(kept)  # atomic under the GIL: str keys run no Python code
    return (
        _not_kept(root, recursive=recursive, kept=kept, inline=False),
        _changed_kept(root, remembered, recursive=recursive, kept=kept),
    )


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


def _not_kept(root: Path, *, recursive: bool, kept: Mapping[str, int], inline: bool) -> Found:
    """Pass 1: depth-first, without building a list first; unreadable folders are skipped.
    `inline`: kept files are checked here too, as the listing meets them."""
    stack: list[tuple[str, str]] = [(str(root), "")]
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
