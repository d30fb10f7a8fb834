"""Intake: which files a pipeline takes, when a file is complete, and what it contains.

A candidate file goes through, in order:

1. **name rules** (`rule_for_name`): the `ignore` patterns (default `.*`, `*.part`, `*.tmp`,
   `*.crdownload`, `~*` — temporary names of files still being transferred), then the `include`
   patterns; for files in sub-folders every folder name is checked against `ignore` too. Our own
   `*.error.json` sidecars are always ignored, and so are names that are not valid UTF-8.
2. **kind** (`rule_for_kind`): only regular files are taken. Symbolic links are never followed
   (a link could point outside the inbox or loop) and FIFOs, sockets and devices are never opened
   (reading a FIFO blocks); such entries are left alone and logged once.
3. **readiness** (`is_settled`): a file counts as complete once its size and mtime have stayed the
   same for `settle` seconds (the daemon also reacts to close-after-write events, and can require a
   `ready_marker` file).
4. **inspection** (`inspect_file`, run in a worker thread): size, SHA-256 streamed in 1 MiB chunks,
   type sniffed from the magic bytes; a file that changes while being hashed is reported as such.
5. **checks** (`rejection_for`): empty files, files over 100 MiB and types other than JPEG, PNG,
   GIF, BMP, WebP and PDF are rejected — they go to the failed folder with the reason, without
   any upload.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from docutray_watch.archive import SIDECAR_SUFFIX
from docutray_watch.client import MAX_FILE_SIZE, sniff_content_type
from docutray_watch.config import PipelineConfig

__all__ = [
    "Candidate",
    "FileChangedError",
    "FileFacts",
    "identity",
    "inspect_file",
    "is_settled",
    "rejection_for",
    "rule_for_kind",
    "rule_for_name",
    "scan_folder",
]

_CHUNK = 1024 * 1024
_SNIFF_BYTES = 1024


@dataclass(frozen=True)
class Candidate:
    """A directory entry a pipeline may take."""

    path: Path
    relative_path: str


@dataclass(frozen=True)
class FileFacts:
    """What inspecting a complete file found."""

    size: int
    mtime_ns: int
    sha256: str
    content_type: str | None
    head: bytes
    # The rest of the file's identity, compared cheaply (one lstat) before its result is
    # delivered and before its final action: a difference means "hash it again".
    ctime_ns: int | None = None
    inode: int | None = None


class FileChangedError(Exception):
    """The file changed while it was being read."""


@functools.lru_cache(maxsize=256)
def _compiled(patterns: tuple[str, ...]) -> tuple[tuple[str, Callable[[str], object]], ...]:
    """Each pattern with its case-folded `fnmatchcase` matcher, compiled once."""
    return tuple((p, re.compile(fnmatch.translate(p.lower())).match) for p in patterns)


def _matches(name: str, patterns: list[str]) -> str | None:
    lowered = name.lower()
    for pattern, match in _compiled(tuple(patterns)):
        if match(lowered):
            return pattern
    return None


def rule_for_name(pipeline: PipelineConfig, relative_path: str) -> str | None:
    """Why the name rules leave this file alone, or None when the pipeline takes it."""
    *folders, name = relative_path.split("/")
    try:
        relative_path.encode("utf-8")
    except UnicodeEncodeError:
        # Python spells the bytes of such a name as lone surrogates, which neither the journal
        # (SQLite text) nor a result file can hold.
        return "the file name is not valid UTF-8 (rename the file)"
    if name.endswith(SIDECAR_SUFFIX):
        return "error sidecar written by docutray-watch"
    watch = pipeline.folder_watch
    marker = (
        watch.ready_marker if watch is not None else getattr(pipeline.source, "ready_marker", None)
    )
    if marker and name.endswith(marker):
        return f"ready marker ({marker})"
    for folder in folders:
        pattern = _matches(folder, pipeline.ignore)
        if pattern:
            return f"folder {folder!r} matches ignore pattern {pattern!r}"
    pattern = _matches(name, pipeline.ignore)
    if pattern:
        return f"matches ignore pattern {pattern!r}"
    if _matches(name, pipeline.include) is None:
        return "matches no include pattern"
    return None


def rule_for_kind(mode: int) -> str | None:
    """Why an entry of this `st_mode` (from lstat) is never opened, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISLNK(mode):
        return "symbolic link (links are never followed)"
    if stat.S_ISFIFO(mode):
        return "FIFO (not a regular file)"
    if stat.S_ISSOCK(mode):
        return "socket (not a regular file)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device (not a regular file)"
    return "not a regular file"


def scan_folder(
    root: Path,
    *,
    recursive: bool,
    skip: Callable[[str, os.stat_result], bool] | None = None,
) -> Iterator[tuple[Candidate, os.stat_result]]:
    """Every entry below `root` (not following links) with its lstat, as it is found.

    Folders are walked depth-first without building a list first, so the first candidate arrives
    at once even in a folder of 20,000 files. Unreadable sub-folders are skipped. `skip(path,
    lstat)` leaves out files known already (kept in place) before any object is made for them.
    """
    stack: list[tuple[Path, str]] = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            entries = os.scandir(folder)
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISDIR(st.st_mode):
                    if recursive:
                        stack.append((Path(entry.path), f"{prefix}{entry.name}/"))
                    continue
                if skip is not None and skip(entry.path, st):
                    continue
                yield Candidate(Path(entry.path), f"{prefix}{entry.name}"), st


def is_settled(st: os.stat_result, now_ns: int, settle: float) -> bool:
    """True when the file was last modified at least `settle` seconds ago."""
    return now_ns - st.st_mtime_ns >= int(settle * 1e9)


def identity(st: os.stat_result) -> tuple[int, int, int, int]:
    """(size, mtime_ns, ctime_ns, inode): what says, without reading it, that a file is unchanged.

    ctime catches a rewrite that restored the mtime (`touch -r`, `cp -p`, rsync); the inode a
    file replaced by another one (a rename over it).
    """
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


def inspect_file(path: Path) -> FileFacts:
    """Hash and sniff a regular file without following links or blocking on special files."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)
    with os.fdopen(fd, "rb", buffering=0) as handle:
        before = os.fstat(handle.fileno())
        reason = rule_for_kind(before.st_mode)
        if reason:
            raise IsADirectoryError(f"{path}: {reason}")
        digest = hashlib.sha256()
        head = b""
        while True:
            chunk = handle.read(_CHUNK)
            if not chunk:
                break
            if len(head) < _SNIFF_BYTES:
                head += chunk[: _SNIFF_BYTES - len(head)]
            digest.update(chunk)
        after = os.fstat(handle.fileno())
    if identity(before) != identity(after):
        raise FileChangedError(f"{path} changed while it was being read")
    return FileFacts(
        size=after.st_size,
        mtime_ns=after.st_mtime_ns,
        sha256=digest.hexdigest(),
        content_type=sniff_content_type(head),
        head=head,
        ctime_ns=after.st_ctime_ns,
        inode=after.st_ino,
    )


def rejection_for(facts: FileFacts) -> str | None:
    """Why the service would refuse this file (checked before any upload), or None."""
    if facts.size == 0:
        return "empty file (0 bytes)"
    if facts.size > MAX_FILE_SIZE:
        return f"too large: {facts.size} bytes, the limit is {MAX_FILE_SIZE} bytes (100 MiB)"
    if facts.content_type is None:
        return (
            "unsupported file type: the content is not JPEG, PNG, GIF, BMP, WebP or PDF "
            f"(starts with {facts.head[:8]!r})"
        )
    return None
