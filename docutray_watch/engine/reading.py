"""Hashing and sniffing files off the event loop, one file or a batch per worker-thread trip."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from docutray_watch import intake
from docutray_watch.delivery import describe

__all__ = [
    "INTAKE_BATCH_BYTES",
    "Unreadable",
    "absolute",
    "by_volume",
    "exists",
    "read",
    "read_all",
    "read_one",
]

INTAKE_BATCH_BYTES = 8 * 1024 * 1024  # a batch reads at most this many bytes, past its first file

Ready = tuple[str, intake.Candidate, os.stat_result]  # (pipeline, candidate, its lstat)


@dataclass(frozen=True)
class Unreadable:
    """Why a file could not be hashed; `forget`: it is gone or still changing (not a failure)."""

    reason: str
    forget: bool = False


def read_one(path: Path) -> intake.FileFacts | Unreadable:
    """Hash and sniff a file; why not, when it cannot be read."""
    try:
        return intake.inspect_file(path)
    except FileNotFoundError:
        return Unreadable("the file disappeared before it could be read", forget=True)
    except intake.FileChangedError:
        # Still changing: forget this attempt, the next event or rescan brings it back.
        return Unreadable("the file changed while it was being read", forget=True)
    except OSError as exc:
        return Unreadable(f"cannot read the file: {exc.strerror or describe(exc)}")


def read_all(paths: list[Path]) -> list[intake.FileFacts | Unreadable]:
    """`read_one` for each file: a batch in one worker-thread trip."""
    return [read_one(path) for path in paths]


async def read(path: Path) -> intake.FileFacts | Unreadable:
    """`read_one` in a worker thread."""
    return await asyncio.to_thread(read_one, path)


def exists(path: str | Path) -> bool:
    """One lstat, inline: cheaper than a trip to a worker thread for a local file."""
    return os.path.lexists(path)


def absolute(path: str | Path) -> str:
    """The absolute path, without touching the disk."""
    return os.path.abspath(path)


def by_volume(ready: list[Ready]) -> Iterator[list[Ready]]:
    """Split a batch so that no part has more than INTAKE_BATCH_BYTES to read (but at least
    one file): large files are not all hashed before the first of them is queued."""
    part: list[Ready] = []
    volume = 0
    for item in ready:
        if part and volume + item[2].st_size > INTAKE_BATCH_BYTES:
            yield part
            part, volume = [], 0
        part.append(item)
        volume += item[2].st_size
    if part:
        yield part
