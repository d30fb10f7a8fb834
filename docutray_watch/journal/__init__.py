"""The journal: the single source of truth about every document, its steps and its deliveries.

- `states`: the states of documents, steps and deliveries (`StrEnum`s) and their transition
  tables, checked on every write.
- `rows`: the immutable rows every backend hands out.
- `store`: `StateStore`, the typed protocol the engine talks to.
- `sqlite`: the SQLite journal (schema and migrations, writer thread with group commit, reports)
  and `SqliteStore`, its `StateStore`.

The names below are re-exported so `from docutray_watch.journal import Journal` keeps working.
"""

from docutray_watch.journal.rows import (
    Completion,
    DeliveryRow,
    DocumentRow,
    JSONObject,
    LatencyRow,
    NewDocument,
    PruneCandidate,
    Queued,
    StepRow,
    kept_stamp,
)
from docutray_watch.journal.sqlite import (
    SCHEMA_VERSION,
    Journal,
    NewerJournalError,
    SqliteStore,
)
from docutray_watch.journal.states import (
    DELIVERY_TRANSITIONS,
    DOCUMENT_STATES,
    DOCUMENT_TRANSITIONS,
    END_STATES,
    IDENTIFY_STEP,
    STEP_END_STATES,
    STEP_TRANSITIONS,
    TRANSITIONS,
    DeliveryState,
    DocumentState,
    InvalidTransition,
    StepState,
)
from docutray_watch.journal.store import REQUEST_RATE_KEY, StateStore

AsyncJournal = SqliteStore
"""The name `SqliteStore` had before the journal became a package (kept for callers)."""

__all__ = [
    "DELIVERY_TRANSITIONS",
    "DOCUMENT_STATES",
    "DOCUMENT_TRANSITIONS",
    "END_STATES",
    "IDENTIFY_STEP",
    "REQUEST_RATE_KEY",
    "SCHEMA_VERSION",
    "STEP_END_STATES",
    "STEP_TRANSITIONS",
    "TRANSITIONS",
    "AsyncJournal",
    "Completion",
    "DeliveryRow",
    "DeliveryState",
    "DocumentRow",
    "DocumentState",
    "InvalidTransition",
    "JSONObject",
    "Journal",
    "LatencyRow",
    "NewDocument",
    "NewerJournalError",
    "PruneCandidate",
    "Queued",
    "SqliteStore",
    "StateStore",
    "StepRow",
    "StepState",
    "kept_stamp",
]
