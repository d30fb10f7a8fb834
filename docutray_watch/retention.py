"""Journal retention: forget documents that finished long ago.

The journal keeps every document with its steps (and their stored results) and deliveries, so
that a crash, `retry` or the duplicate check can rely on them. Months later that is only weight.
With `journal.retention_days` set, the engine forgets documents that finished more than that many
days ago — at start and then once a day — and `docutray-watch prune` does it on demand.

What is never forgotten, whatever its age:

- a document that has not finished (it is still being worked on, or waits for a retry);
- the newest row of a file kept where it was found (`action: keep`) while that file is still
  there: without it the next folder scan would take the file again and pay for it twice.

Forgetting a document also forgets its content for the duplicate check: the same bytes dropped
again later are processed again. Pruning runs on its own connection in small transactions, so the
engine's writer waits at most one batch.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from docutray_watch.journal import Journal

__all__ = ["SECONDS_PER_DAY", "PruneResult", "prune", "prune_journal_file"]

SECONDS_PER_DAY = 86_400.0


@dataclass
class PruneResult:
    """What one prune did."""

    finished_before: float
    forgotten: int = 0
    kept_in_place: int = 0  # old enough, but the newest row of a kept file that is still there
    forgotten_kept: list[tuple[str, str, int]] = field(default_factory=list)
    """(pipeline, path, id) of forgotten rows of kept files whose file is gone."""


def prune(
    journal: Journal,
    *,
    finished_before: float,
    dry_run: bool = False,
    batch: int = 500,
    exists: Callable[[str], bool] = os.path.lexists,
) -> PruneResult:
    """Forget the documents of `journal` that finished before `finished_before` (a Unix time)."""
    result = PruneResult(finished_before=finished_before)
    after = 0
    while True:
        candidates = journal.prune_candidates(finished_before, after_id=after, limit=batch)
        if not candidates:
            return result
        after = candidates[-1].id
        ids: list[int] = []
        for candidate in candidates:
            if candidate.kept_latest:
                if exists(candidate.path):
                    result.kept_in_place += 1
                    continue
                result.forgotten_kept.append((candidate.pipeline, candidate.path, candidate.id))
            ids.append(candidate.id)
        if dry_run:
            result.forgotten += len(ids)
        else:
            result.forgotten += journal.forget_documents(ids, finished_before)


def prune_journal_file(
    path: str | os.PathLike[str],
    *,
    older_than_days: float,
    dry_run: bool = False,
    now: Callable[[], float] = time.time,
) -> PruneResult:
    """Open the journal at `path` on a connection of its own and prune it."""
    finished_before = now() - older_than_days * SECONDS_PER_DAY
    with Journal(Path(path)) as journal:
        return prune(journal, finished_before=finished_before, dry_run=dry_run)
