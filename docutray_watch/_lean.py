"""Leave out, at import, the optional extras of dependencies that docutray-watch never uses.

Imported first by the package, so before anything imports structlog or httpx:

- structlog imports rich (and pygments through it) only to offer rich tracebacks and rich
  renderings of local variables; docutray-watch renders plain tracebacks without locals
  (`log.py`), so structlog is imported while rich is hidden (~40 ms of CPU of every command).
  rich itself stays importable (`process` draws its progress bar with it).
- httpx imports its command-line client (`httpx._main`: click, rich, pygments) in its
  `__init__` when that can be imported; here it cannot (`httpx.main` says it cannot run).

Nothing changes when structlog or httpx was imported before this package.
"""

from __future__ import annotations

import sys


def _trim() -> None:
    if "structlog" not in sys.modules and "rich" not in sys.modules:
        sys.modules["rich"] = None  # type: ignore[assignment]  # `import rich` fails meanwhile
        try:
            import structlog  # noqa: F401
        except ImportError:
            pass  # a structlog that needs rich: it is imported normally later, rich back
        finally:
            del sys.modules["rich"]
    if "httpx" not in sys.modules:
        sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]


_trim()
