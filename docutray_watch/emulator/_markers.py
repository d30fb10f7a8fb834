"""Find the emulator's trigger markers in a document streamed in chunks.

``DOCUTRAY-EMULATOR:ERROR`` makes the execution (or identification) end in ERROR;
``DOCUTRAY-EMULATOR:LATENCY=<seconds>`` sets its latency; ``DOCUTRAY-EMULATOR:TYPE=<code>`` and
``DOCUTRAY-EMULATOR:CONFIDENCE=<0..1>`` set what identification answers (the first of each wins).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

ERROR_MARKER = b"DOCUTRAY-EMULATOR:ERROR"
LATENCY_MARKER = b"DOCUTRAY-EMULATOR:LATENCY="
TYPE_MARKER = b"DOCUTRAY-EMULATOR:TYPE="
CONFIDENCE_MARKER = b"DOCUTRAY-EMULATOR:CONFIDENCE="

_MAX_CODE = 64
_PATTERN = re.compile(
    rb"DOCUTRAY-EMULATOR:(?:(ERROR)|LATENCY=(\d{1,6}(?:\.\d{1,6})?)"
    rb"|TYPE=([A-Za-z0-9_\-]{1,64})|CONFIDENCE=(\d(?:\.\d{1,6})?))"
)
_LONGEST_MARKER = len(TYPE_MARKER) + _MAX_CODE
# A value match this close to the end of the data seen so far may still grow ("1" -> "1.5").
_UNSETTLED_TAIL = _MAX_CODE + 2
# Bytes kept between chunks: enough to hold any marker that might still be completed.
_CARRY = _LONGEST_MARKER + _UNSETTLED_TAIL + 8


@dataclass(frozen=True, slots=True)
class Markers:
    """Triggers found in one document."""

    force_error: bool = False
    latency: float | None = None
    document_type: str | None = None
    confidence: float | None = None


class MarkerScanner:
    """Scan chunks for markers, including markers split across chunk boundaries."""

    __slots__ = ("_carry", "_confidence", "_document_type", "_force_error", "_latency")

    def __init__(self) -> None:
        self._carry = b""
        self._force_error = False
        self._latency: float | None = None
        self._document_type: str | None = None
        self._confidence: float | None = None

    def feed(self, chunk: bytes) -> None:
        """Scan the next chunk of the document."""
        if chunk:
            self._scan(self._carry + chunk, final=False)

    def finish(self) -> Markers:
        """Scan what is left and return the markers found."""
        self._scan(self._carry, final=True)
        self._carry = b""
        return Markers(
            force_error=self._force_error,
            latency=self._latency,
            document_type=self._document_type,
            confidence=self._confidence,
        )

    def _scan(self, window: bytes, *, final: bool) -> None:
        for match in _PATTERN.finditer(window):
            if match.group(1):
                self._force_error = True
                continue
            if not (final or match.end() < len(window) - _UNSETTLED_TAIL):
                continue  # it may still grow with the next chunk: seen again then
            latency, code, confidence = match.group(2, 3, 4)
            if latency is not None and self._latency is None:
                self._latency = float(latency)
            elif code is not None and self._document_type is None:
                self._document_type = code.decode()
            elif confidence is not None and self._confidence is None and float(confidence) <= 1:
                self._confidence = float(confidence)
        self._carry = window[-_CARRY:]


def scan_markers(data: bytes) -> Markers:
    """Return the markers found in a whole document held in memory."""
    scanner = MarkerScanner()
    scanner.feed(data)
    return scanner.finish()
