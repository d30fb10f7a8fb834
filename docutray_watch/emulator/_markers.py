"""Find the emulator's trigger markers in a document streamed in chunks.

``DOCUTRAY-EMULATOR:ERROR`` makes the execution end in ERROR;
``DOCUTRAY-EMULATOR:LATENCY=<seconds>`` sets its latency (the first one wins).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ERROR_MARKER = b"DOCUTRAY-EMULATOR:ERROR"
LATENCY_MARKER = b"DOCUTRAY-EMULATOR:LATENCY="

_PATTERN = re.compile(rb"DOCUTRAY-EMULATOR:(?:(ERROR)|LATENCY=(\d{1,6}(?:\.\d{1,6})?))")
_LONGEST_MARKER = len(LATENCY_MARKER) + 13
# A latency match this close to the end of the data seen so far may still grow ("1" -> "1.5").
_UNSETTLED_TAIL = 16
# Bytes kept between chunks: enough to hold any marker that might still be completed.
_CARRY = _LONGEST_MARKER + _UNSETTLED_TAIL + 8


@dataclass(frozen=True, slots=True)
class Markers:
    """Triggers found in one document."""

    force_error: bool = False
    latency: float | None = None


class MarkerScanner:
    """Scan chunks for markers, including markers split across chunk boundaries."""

    __slots__ = ("_carry", "_force_error", "_latency")

    def __init__(self) -> None:
        self._carry = b""
        self._force_error = False
        self._latency: float | None = None

    def feed(self, chunk: bytes) -> None:
        """Scan the next chunk of the document."""
        if chunk:
            self._scan(self._carry + chunk, final=False)

    def finish(self) -> Markers:
        """Scan what is left and return the markers found."""
        self._scan(self._carry, final=True)
        self._carry = b""
        return Markers(force_error=self._force_error, latency=self._latency)

    def _scan(self, window: bytes, *, final: bool) -> None:
        for match in _PATTERN.finditer(window):
            if match.group(1):
                self._force_error = True
            elif self._latency is None and (final or match.end() < len(window) - _UNSETTLED_TAIL):
                self._latency = float(match.group(2))
        self._carry = window[-_CARRY:]


def scan_markers(data: bytes) -> Markers:
    """Return the markers found in a whole document held in memory."""
    scanner = MarkerScanner()
    scanner.feed(data)
    return scanner.finish()
