"""Tests of the trigger-marker scanner, including markers split across chunks."""

from __future__ import annotations

import pytest

from docutray_watch.emulator._markers import Markers, MarkerScanner, scan_markers


def _scan_in_chunks(data: bytes, cut: int) -> Markers:
    scanner = MarkerScanner()
    scanner.feed(data[:cut])
    scanner.feed(data[cut:])
    return scanner.finish()


class TestMarkerScanner:
    def test_plain_document_has_no_markers(self) -> None:
        """A document without markers asks for nothing."""
        assert scan_markers(b"%PDF-1.7 nothing special") == Markers()

    def test_finds_error_marker(self) -> None:
        """The ERROR marker forces an error."""
        assert scan_markers(b"abc DOCUTRAY-EMULATOR:ERROR def").force_error

    def test_reads_latency_value(self) -> None:
        """The LATENCY marker carries a decimal number of seconds."""
        assert scan_markers(b"x DOCUTRAY-EMULATOR:LATENCY=2.5 y").latency == 2.5

    def test_latency_marker_at_the_very_end(self) -> None:
        """A LATENCY marker ending the document is read whole."""
        assert scan_markers(b"x DOCUTRAY-EMULATOR:LATENCY=12").latency == 12.0

    def test_first_latency_marker_wins(self) -> None:
        """When a document has several LATENCY markers the first one counts."""
        data = b"DOCUTRAY-EMULATOR:LATENCY=3 ... DOCUTRAY-EMULATOR:LATENCY=7 " + b"." * 100
        assert scan_markers(data).latency == 3.0

    @pytest.mark.parametrize("cut", range(1, 60))
    def test_error_marker_split_anywhere(self, cut: int) -> None:
        """An ERROR marker split at any byte across two chunks is still found."""
        data = b"0123456789" + b"DOCUTRAY-EMULATOR:ERROR" + b"z" * 30
        assert _scan_in_chunks(data, cut).force_error

    @pytest.mark.parametrize("cut", range(1, 70))
    def test_latency_marker_split_anywhere(self, cut: int) -> None:
        """A LATENCY marker split at any byte, even inside its number, keeps its full value."""
        data = b"0123456789" + b"DOCUTRAY-EMULATOR:LATENCY=12.75" + b"z" * 30
        assert _scan_in_chunks(data, cut).latency == 12.75

    def test_markers_across_many_small_chunks(self) -> None:
        """Markers fed one byte at a time are found."""
        data = b"head DOCUTRAY-EMULATOR:LATENCY=0.5 mid DOCUTRAY-EMULATOR:ERROR tail"
        scanner = MarkerScanner()
        for index in range(len(data)):
            scanner.feed(data[index : index + 1])
        assert scanner.finish() == Markers(force_error=True, latency=0.5)
