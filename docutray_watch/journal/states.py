"""The states a document, a step and a delivery can be in, and the moves allowed between them.

Each kind of row has a `StrEnum` (its values are the strings stored in the journal, unchanged since
schema 1) and a transition table: a state maps to the states it may move to. Every write of a
state goes through `check_document`, `check_step` or `check_delivery`; a move outside the table
raises `InvalidTransition` (a bug, never a user error). Staying in the same state is always
allowed (a write that only updates other columns).

Documents::

    discovered ─► queued ─► submitting ─► polling ─► completed ─► delivered ─► archived
        │            │            └──────────────────────┘   └──► failed ─┐      ▲
        │            └─► rejected (vanished / changed / unreadable)        │      │
        ├─► rejected (unsupported, empty, too large, unreadable)           │      │
        └─► duplicate ────────────────────────────────────────────────────┼──────┘
                                         failed / rejected / archived ───► queued  (retry)

    completed, delivered, duplicate, failed, rejected ─► superseded (the file changed meanwhile)

    A pipeline that identifies first queues a document with one step row, `@identify`
    (`IDENTIFY_STEP`); once it succeeded the document waits (queued, submitting or polling) for
    its route, which adds the routed step rows, or ends it:

    queued / submitting / polling ─► failed    (no route: `otherwise: fail`)
                                  └► unrouted  (no route: `otherwise: keep`) ─► queued  (retry)

Steps (one per document and step ID)::

    pending ─► submitting ─► polling ─► success | error | failed
       │           │  ▲ └─► pending (the POST provably never reached the service)
       │           └──┘ (uncertain: resubmitted once)
       └───────────┴─► failed (source changed, two uncertain submissions, refused)

Deliveries (one per step result and sink)::

    pending ─► delivered ─► superseded (the file changed after delivery)
       │  ▲
       ▼  │ (retry)
     failed ─► dropped      pending ─► dropped (the document was superseded first)
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import TypeVar

__all__ = [
    "DELIVERY_TRANSITIONS",
    "DOCUMENT_STATES",
    "DOCUMENT_TRANSITIONS",
    "END_STATES",
    "IDENTIFY_STEP",
    "STEP_END_STATES",
    "STEP_TRANSITIONS",
    "TRANSITIONS",
    "DeliveryState",
    "DocumentState",
    "InvalidTransition",
    "StepState",
    "check_delivery",
    "check_document",
    "check_step",
]


IDENTIFY_STEP = "@identify"
"""The reserved step id under which a document's identification is journaled (a step row: its
id stored before anything else, polled after a crash, submitted once more at most)."""


class InvalidTransition(RuntimeError):
    """A state change that the state machine does not allow (a bug, never a user error)."""


class DocumentState(StrEnum):
    """Where a document is in its life."""

    DISCOVERED = "discovered"
    QUEUED = "queued"
    SUBMITTING = "submitting"
    POLLING = "polling"
    COMPLETED = "completed"
    DELIVERED = "delivered"
    DUPLICATE = "duplicate"
    ARCHIVED = "archived"
    FAILED = "failed"
    REJECTED = "rejected"
    SUPERSEDED = "superseded"
    # Identified as a type no route takes, with `otherwise: keep`: left for a person (the file
    # stays where it was found) until `retry` releases it once a route exists for its type.
    UNROUTED = "unrouted"


class StepState(StrEnum):
    """Where one step of one document is."""

    PENDING = "pending"
    SUBMITTING = "submitting"
    POLLING = "polling"
    SUCCESS = "success"
    ERROR = "error"
    FAILED = "failed"


class DeliveryState(StrEnum):
    """Where one result is on its way to one sink."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    SUPERSEDED = "superseded"  # delivered, then the file changed: describes older bytes
    DROPPED = "dropped"  # never delivered: the document was superseded or failed first


S = TypeVar("S", bound=StrEnum)

_D = DocumentState
_S = StepState
_R = DeliveryState

# Where an identified document no route takes goes (`otherwise: fail` or `keep`).
_NO_ROUTE = frozenset({_D.FAILED, _D.UNROUTED})

DOCUMENT_TRANSITIONS: Mapping[DocumentState, frozenset[DocumentState]] = {
    _D.DISCOVERED: frozenset({_D.QUEUED, _D.REJECTED, _D.DUPLICATE}),
    _D.QUEUED: frozenset({_D.SUBMITTING, _D.REJECTED, _D.DISCOVERED, *_NO_ROUTE}),
    _D.SUBMITTING: frozenset({_D.POLLING, _D.COMPLETED, _D.QUEUED, *_NO_ROUTE}),
    _D.POLLING: frozenset({_D.COMPLETED, *_NO_ROUTE}),
    _D.COMPLETED: frozenset({_D.DELIVERED, _D.FAILED, _D.SUPERSEDED}),
    _D.DELIVERED: frozenset({_D.ARCHIVED, _D.FAILED, _D.SUPERSEDED}),
    _D.DUPLICATE: frozenset({_D.ARCHIVED, _D.SUPERSEDED}),
    _D.ARCHIVED: frozenset({_D.QUEUED}),
    _D.FAILED: frozenset({_D.QUEUED, _D.SUPERSEDED}),
    _D.REJECTED: frozenset({_D.QUEUED, _D.DISCOVERED, _D.SUPERSEDED}),
    # The file changed while it was processed: this version's results are not (or no longer)
    # what the file holds, and the file was taken again as a new document.
    _D.SUPERSEDED: frozenset(),
    _D.UNROUTED: frozenset({_D.QUEUED, _D.SUPERSEDED}),
}

STEP_TRANSITIONS: Mapping[StepState, frozenset[StepState]] = {
    _S.PENDING: frozenset({_S.SUBMITTING, _S.FAILED}),
    # submitting → submitting: an uncertain submission is counted and may be repeated once.
    _S.SUBMITTING: frozenset({_S.POLLING, _S.PENDING, _S.FAILED}),
    _S.POLLING: frozenset({_S.SUCCESS, _S.ERROR, _S.FAILED}),
    # Ended steps never move; `retry` deletes failed and errored ones and starts them afresh.
    _S.SUCCESS: frozenset(),
    _S.ERROR: frozenset(),
    _S.FAILED: frozenset(),
}

DELIVERY_TRANSITIONS: Mapping[DeliveryState, frozenset[DeliveryState]] = {
    _R.PENDING: frozenset({_R.DELIVERED, _R.FAILED, _R.DROPPED}),
    _R.FAILED: frozenset({_R.PENDING, _R.DROPPED}),
    _R.DELIVERED: frozenset({_R.SUPERSEDED}),
    _R.SUPERSEDED: frozenset(),
    _R.DROPPED: frozenset(),
}

# Kept under their old names: `TRANSITIONS` is the document table.
TRANSITIONS = DOCUMENT_TRANSITIONS
DOCUMENT_STATES: tuple[DocumentState, ...] = tuple(DocumentState)
END_STATES = frozenset({_D.ARCHIVED, _D.FAILED, _D.REJECTED, _D.SUPERSEDED, _D.UNROUTED})
STEP_END_STATES = frozenset({_S.SUCCESS, _S.ERROR, _S.FAILED})


def check_document(doc_id: int, current: str, new: str) -> DocumentState:
    """`new` as a `DocumentState`, if a document in `current` may move there."""
    return _check("document", doc_id, DocumentState, DOCUMENT_TRANSITIONS, current, new)


def check_step(step_row: int, current: str, new: str) -> StepState:
    """`new` as a `StepState`, if a step in `current` may move there."""
    return _check("step", step_row, StepState, STEP_TRANSITIONS, current, new)


def check_delivery(delivery_id: int, current: str, new: str) -> DeliveryState:
    """`new` as a `DeliveryState`, if a delivery in `current` may move there."""
    return _check("delivery", delivery_id, DeliveryState, DELIVERY_TRANSITIONS, current, new)


def _check(
    kind: str,
    row_id: int,
    enum: type[S],
    table: Mapping[S, frozenset[S]],
    current: str,
    new: str,
) -> S:
    try:
        before, after = enum(current), enum(new)
    except ValueError:
        raise InvalidTransition(f"{kind} {row_id}: unknown state in {current} → {new}") from None
    if after != before and after not in table[before]:
        raise InvalidTransition(f"{kind} {row_id}: {before} → {after} is not allowed")
    return after
