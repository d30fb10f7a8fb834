"""The engine: every document from its folder to its sinks and its final place, nothing lost.

Where a document goes next, module by module (each phase is a function of the stored rows that
returns the next stored state; `run.DocumentRun` chains them for one document)::

    discovery.py   a file is nominated, waits until complete, is hashed, journaled `queued`
                   (or `rejected` / `duplicate`: straight to finalize)
    run.py         Dispatcher: queued documents wait for an execution slot, in order;
                   DocumentRun: one coroutine per document from its stored state to its end
    submit.py      submit: the upload; the execution id journaled before anything else
    poll.py        poll_once: one status read; `poll` repeats it on the learned schedule
    deliver.py     deliver: one result to one sink; deliver_all: every pending delivery
    finalize.py    finalize: the file moved, deleted or kept; the document's end journaled
    limits.py      Limits: execution slots, the shared request rate, the API pauses (gate.py,
                   ratelimit.py), and errors.py: what an API failure means
    core.py        Engine: start, resume at the stored state, reload, stop

All pipelines share one limit of executions in flight (`api.max_in_flight`) and one request
rate (`api.requests_per_second`) that a 429 answer slows down for everyone.

Hooks fire in this order for a document (`startup` before the first, `shutdown` after the last)::

    ignore_document            a candidate file's name passed the include/ignore rules
                               (discovery: `_ready_to_read`)
    document_discovered        the file is complete, hashed, checked and journaled `queued`
                               (discovery: `announce_queued`), or journaled `duplicate`
    after_document_identified  a pipeline with `identify`: the service said which type it is
                               (run: `_route`), before its route's steps or its failure
    before_document_submit     for each step, just before its submission (may add metadata)
                               (submit: `_metadata`)
    after_document_result      for each step, once its SUCCESS/ERROR result is journaled
                               (steps: `step_ended`)
    after_document_delivered   for each result and sink, once the sink stored it (deliver)
    on_document_error          the document is rejected or failed (finalize, before the action)
    after_document_archived    last: the source file was moved, deleted or kept (finalize), or,
                               outcome `superseded`, left alone: it changed and is taken again

A duplicate goes from `document_discovered` straight to `after_document_archived`. A file that
is readable but rejected (empty, an unsupported type, too large) does not fire
`document_discovered`: it goes to `on_document_error` and then `after_document_archived`.

A file that changes while it is processed is never archived under results that describe other
bytes: its identity (size, mtime, ctime, inode; hashed again when any differs) is checked once
every step has ended, before anything is delivered, and again just before the final action. A
change found there delivers nothing more, ends the document `superseded` (its delivered results
are marked so) and takes the file again as a new document — or, with `on_change: fail`, fails it.

Crash safety (design §5): after a restart, steps in `polling` resume polling their execution id
and are never resubmitted; steps caught in `submitting` are resubmitted at most once (and the
document is flagged `resubmitted`); deliveries not yet journaled are delivered again (sinks are
idempotent); interrupted moves are completed.
"""

from docutray_watch.engine.context import RunSummary
from docutray_watch.engine.core import Engine, MissingApiKeyError, StateDirError

__all__ = ["Engine", "MissingApiKeyError", "RunSummary", "StateDirError"]
