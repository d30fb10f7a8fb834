"""The final file actions: move (crash-safe, even across file systems), delete or keep, and the
`<name>.error.json` sidecar that says why a document failed.

A move is journaled before it happens (the destination is chosen once and stored), so a crash in
the middle is finished on restart: `move_file` is safe to run again with the same arguments.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from docutray_watch.fsutil import (
    atomic_write_bytes,
    fsync_dir,
    remove_stale_temp_files,
    temp_prefix,
)

__all__ = ["move_file", "remove_file", "sidecar_path", "unique_destination", "write_sidecar"]

SIDECAR_SUFFIX = ".error.json"
NAME_MAX = 255  # bytes in one path component on Linux file systems


def sidecar_path(document_path: Path) -> Path:
    """`x.pdf` → `x.pdf.error.json` beside it.

    A name too long for the suffix is cut and tagged with a hash of the whole name
    (`<start of the name>~1a2b3c4d.error.json`), so every document keeps a sidecar of its own.
    """
    name = document_path.name
    if len(os.fsencode(name + SIDECAR_SUFFIX)) <= NAME_MAX:
        return document_path.with_name(name + SIDECAR_SUFFIX)
    tag = "~" + hashlib.sha256(os.fsencode(name)).hexdigest()[:8]
    head = _cut(name, NAME_MAX - len(tag) - len(SIDECAR_SUFFIX))
    return document_path.with_name(head + tag + SIDECAR_SUFFIX)


def unique_destination(folder: Path, name: str) -> Path:
    """A path in `folder` for `name` that clashes with nothing there (`a.pdf`, `a.1.pdf`, …)."""
    candidate = folder / name
    if not _taken(candidate):
        return candidate
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    counter = 1
    while True:
        tail = f".{counter}.{ext}" if ext else f".{counter}"
        # A name already at the length limit makes room for the counter by losing its end.
        candidate = folder / (_cut(stem, NAME_MAX - len(os.fsencode(tail))) + tail)
        if not _taken(candidate):
            return candidate
        counter += 1


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of its file-system encoding, never mid-character."""
    encoded = os.fsencode(text)
    if len(encoded) <= limit:
        return text
    end = max(0, limit)
    while end > 0 and (encoded[end] & 0xC0) == 0x80:  # a UTF-8 continuation byte: step back
        end -= 1
    return os.fsdecode(encoded[:end])


def _taken(path: Path) -> bool:
    return os.path.lexists(path) or os.path.lexists(sidecar_path(path))


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(chunk)
    return digest.hexdigest()


def move_file(source: Path, destination: Path, *, sha256: str | None = None) -> Path:
    """Move `source` to `destination` durably; returns where the file is now.

    Same file system: one rename. Across file systems: copy to a temporary name beside the
    destination, fsync, rename, fsync the folder, then remove the source. Running it again after
    a crash completes the move. An existing different file at `destination` is never overwritten.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    if not os.path.lexists(source):
        if os.path.lexists(destination):
            return destination  # a previous run got this far
        raise FileNotFoundError(errno.ENOENT, "the file to move is gone", str(source))
    if os.path.lexists(destination):
        same = (
            sha256 is not None
            and destination.is_file()
            and not destination.is_symlink()
            and _sha256_of(destination) == sha256
        )
        if not same:
            destination = unique_destination(destination.parent, destination.name)
        else:
            # The copy finished before a crash; only the source is left to remove.
            source.unlink()
            fsync_dir(source.parent)
            return destination
    while True:
        try:
            _rename_no_replace(source, destination)
        except FileExistsError:
            # Someone put a file there since we looked: never overwrite it, pick another name.
            destination = unique_destination(destination.parent, destination.name)
            continue
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            _copy_then_remove(source, destination)
        else:
            fsync_dir(destination.parent)
            if destination.parent != source.parent:
                fsync_dir(source.parent)
        return destination


def _rename_no_replace(source: Path, destination: Path) -> None:
    """Rename without ever replacing an existing `destination` (FileExistsError instead).

    A hard link then an unlink does that atomically on file systems with hard links; where there
    are none (some network or FAT file systems) a plain rename is the best there is. A crash
    between the two steps leaves both names on one file, which `move_file` finishes on rerun.
    """
    try:
        os.link(source, destination, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK, errno.ENOSYS):
            if os.path.lexists(destination):
                raise FileExistsError(
                    errno.EEXIST, "destination exists", str(destination)
                ) from None
            os.rename(source, destination)
            return
        raise
    os.unlink(source)


def _copy_then_remove(source: Path, destination: Path) -> None:
    remove_stale_temp_files(destination.parent)  # a copy cut short by a crash
    fd, tmp = tempfile.mkstemp(
        dir=destination.parent, prefix=temp_prefix(destination), suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1024 * 1024)
            out.flush()
            os.fsync(out.fileno())
        shutil.copystat(source, tmp)
        os.rename(tmp, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(destination.parent)
    source.unlink()
    fsync_dir(source.parent)


def remove_file(path: Path) -> bool:
    """Delete a file durably; False when it was already gone."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    fsync_dir(path.parent)
    return True


def write_sidecar(document_path: Path, details: dict[str, Any]) -> Path:
    """Write `<name>.error.json` beside the document, atomically."""
    target = sidecar_path(document_path)
    payload = json.dumps(details, indent=2, ensure_ascii=False, default=str) + "\n"
    atomic_write_bytes(target, payload.encode("utf-8"))
    return target
