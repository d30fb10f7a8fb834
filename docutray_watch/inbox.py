"""A pipeline's watched folder when it does not exist: one rule for every command.

`run` and `process` create it (with its parents) and say so — a log line, and for `process` a line
in its report — so a mistyped `watch.path` never passes in silence. `validate` creates nothing: it
says the folder will be created, and fails only when it could not be. A folder that disappears
while the daemon runs is another matter (an unmounted share): the daemon waits for it to return.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CREATED_NOTE", "ensure_inbox", "inbox_check"]

CREATED_NOTE = "`run` and `process` create it (check watch.path for a typo)"


def ensure_inbox(root: Path) -> bool:
    """Create the folder if it is missing; True when it had to be created. Raises `OSError`."""
    if root.is_dir():
        return False
    root.mkdir(parents=True, exist_ok=True)
    return True


def inbox_check(root: Path) -> tuple[str | None, str | None]:
    """(problem, note) about the folder for `validate`, which must not create it."""
    if os.path.lexists(root):
        if not root.is_dir():
            return "not a folder", None
        if not os.access(root, os.R_OK | os.X_OK):
            return "not readable by this user", None
        return None, None
    ancestor = root.parent
    while not os.path.lexists(ancestor) and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        return f"does not exist, and cannot be created: {ancestor} is not a folder", None
    if not os.access(ancestor, os.W_OK | os.X_OK):
        return f"does not exist, and this user cannot create it in {ancestor}", None
    return None, f"does not exist yet; {CREATED_NOTE}"
