"""The SQLite journal: schema and migrations, the synchronous `Journal`, the writer thread with
group commit, and `SqliteStore` (the `StateStore` the engine uses on one machine)."""

from docutray_watch.journal.sqlite.journal import Journal
from docutray_watch.journal.sqlite.schema import SCHEMA_VERSION, NewerJournalError, backup_path
from docutray_watch.journal.sqlite.store import SqliteStore
from docutray_watch.journal.sqlite.writer import GroupCommitWriter

__all__ = [
    "SCHEMA_VERSION",
    "GroupCommitWriter",
    "Journal",
    "NewerJournalError",
    "SqliteStore",
    "backup_path",
]
