"""How a configuration problem is reported: `ConfigError`, one `file:line:col: path: message`
line per `ConfigIssue`; the CLI prints them and exits `EX_CONFIG` (78)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

EX_CONFIG = 78


@dataclass(frozen=True)
class ConfigIssue:
    """One problem: where (YAML path and, when known, line/column) and what."""

    path: str
    message: str
    line: int | None = None
    column: int | None = None

    def format(self, source: str | None) -> str:
        """One line: `file:line:col: path: message`."""
        where = source or "<config>"
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.path or '<root>'}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; `str()` gives one line per problem."""

    def __init__(self, issues: Sequence[ConfigIssue], source: str | None = None) -> None:
        self.issues = list(issues)
        self.source = source
        super().__init__("\n".join(self.lines()))

    def lines(self) -> list[str]:
        """The problems, one line each."""
        return [issue.format(self.source) for issue in self.issues]


def format_path(parts: Sequence[str | int]) -> str:
    """`('pipelines', 0, 'sinks', 1, 'bucket')` → `pipelines[0].sinks[1].bucket`."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
