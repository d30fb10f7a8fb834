"""The peaks in /_emulator/stats: most executions running at once (all, or the latest of each
document), most requests in one second."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from docutray_watch.emulator import EmulatorServer
from docutray_watch.emulator._peaks import LatestRunningPeak, RunningPeak, WindowPeak
from docutray_watch.testing import EmulatorFactory, ManualClock

Connect = Callable[[EmulatorServer], httpx.Client]
MakePdf = Callable[..., bytes]


def _submit(client: httpx.Client, document: bytes) -> str:
    response = client.post(
        "/api/steps-async/step_1", files={"image": ("doc.pdf", document, "application/pdf")}
    )
    response.raise_for_status()
    execution_id: str = response.json()["execution_id"]
    return execution_id


def _stats(client: httpx.Client) -> dict[str, int]:
    response = client.get("/_emulator/stats", params={"executions": "false"})
    response.raise_for_status()
    body: dict[str, int] = response.json()
    return body


class TestRunningPeak:
    def test_overlapping_executions_count_together(self) -> None:
        """Three executions whose lifetimes overlap at one instant make a peak of three."""
        peak = RunningPeak()
        peak.started(0.0, 10.0)
        peak.started(1.0, 5.0)
        peak.started(4.0, 6.0)
        assert peak.peak == 3

    def test_finished_executions_no_longer_count(self) -> None:
        """An execution that completed before the next one started does not add to the peak."""
        peak = RunningPeak()
        peak.started(0.0, 1.0)
        peak.started(1.0, 2.0)
        peak.started(2.5, 3.0)
        assert peak.peak == 1

    def test_instant_execution_never_runs(self) -> None:
        """A zero-latency execution is terminal at once: it is not running."""
        peak = RunningPeak()
        peak.started(0.0, 0.0)
        assert peak.peak == 0


class TestLatestRunningPeak:
    def test_a_resubmission_replaces_the_running_execution_it_supersedes(self) -> None:
        """A document submitted again while its first execution runs counts once; the plain
        peak counts both."""
        latest, everything = LatestRunningPeak(), RunningPeak()
        for now, ends, key, ident in (
            (0.0, 10.0, ("s", "a"), "e1"),
            (1.0, 10.0, ("s", "b"), "e2"),
            (2.0, 10.0, ("s", "a"), "e3"),  # resubmits a: e1 runs on, superseded
        ):
            latest.started(now, ends, key, ident)
            everything.started(now, ends)
        assert (latest.peak, everything.peak) == (2, 3)

    def test_distinct_documents_count_like_the_plain_peak(self) -> None:
        """Without resubmissions both peaks agree, finished executions no longer counting."""
        latest = LatestRunningPeak()
        latest.started(0.0, 5.0, ("s", "a"), "e1")
        latest.started(1.0, 5.0, ("s", "b"), "e2")
        latest.started(6.0, 9.0, ("s", "c"), "e3")
        latest.started(6.5, 9.0, ("t", "c"), "e4")  # another step of the same document
        assert latest.peak == 2

    def test_a_finished_superseded_execution_is_not_counted_twice(self) -> None:
        """An execution superseded after it finished frees nothing more: the count stays right."""
        latest = LatestRunningPeak()
        latest.started(0.0, 1.0, ("s", "a"), "e1")
        latest.started(2.0, 5.0, ("s", "a"), "e2")
        latest.started(3.0, 5.0, ("s", "b"), "e3")
        assert latest.peak == 2


class TestWindowPeak:
    def test_window_slides_across_calendar_seconds(self) -> None:
        """Requests at 0.6 s and 1.4 s are within one second of each other: both count."""
        peak = WindowPeak(1.0)
        for _ in range(10):
            peak.arrived(0.6)
        for _ in range(10):
            peak.arrived(1.4)
        assert peak.peak == 20

    def test_requests_a_second_apart_are_separate(self) -> None:
        """Requests one second or more apart never share a window."""
        peak = WindowPeak(1.0)
        for t in (0.0, 1.0, 2.0, 3.5):
            peak.arrived(t)
        assert peak.peak == 1


class TestStatsEndpoint:
    def test_peak_of_running_executions(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """Two executions running together, then a third after both finished: the peak is two,
        while executions_in_flight has dropped to one."""
        client = connect(emulator_factory(clock=clock, latency=10.0))
        _submit(client, make_pdf())
        clock.advance(2.0)
        _submit(client, make_pdf())
        clock.advance(20.0)
        _submit(client, make_pdf())
        stats = _stats(client)
        assert stats["peak_executions_running"] == 2
        assert stats["executions_in_flight"] == 1

    def test_a_resubmitted_document_counts_once_in_the_latest_peak(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """The same document POSTed twice while the first runs: both endpoints (HTTP and
        `EmulatorServer.stats()`) show a running peak of two and a latest-only peak of one."""
        emulator = emulator_factory(clock=clock, latency=10.0)
        client = connect(emulator)
        document = make_pdf()
        _submit(client, document)
        clock.advance(1.0)
        _submit(client, document)
        stats = _stats(client)
        assert (stats["peak_executions_running"], stats["peak_latest_executions_running"]) == (2, 1)
        direct = emulator.stats(include_executions=False)
        assert (direct.peak_executions_running, direct.peak_latest_executions_running) == (2, 1)
        assert direct.resubmissions == 1

    def test_most_requests_in_one_second(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """Submissions and status reads all count; a burst of four within a second is the peak,
        two spread-out ones later do not change it."""
        client = connect(emulator_factory(clock=clock, latency=1.0))
        execution_id = _submit(client, make_pdf())
        for _ in range(3):
            clock.advance(0.2)
            client.get(f"/api/steps-async/status/{execution_id}").raise_for_status()
        clock.advance(5.0)
        client.get(f"/api/steps-async/status/{execution_id}").raise_for_status()
        clock.advance(2.0)
        client.get(f"/api/steps-async/status/{execution_id}").raise_for_status()
        assert _stats(client)["peak_requests_per_second"] == 4

    def test_reset_clears_the_peaks(
        self,
        emulator_factory: EmulatorFactory,
        connect: Connect,
        make_pdf: MakePdf,
        clock: ManualClock,
    ) -> None:
        """POST /_emulator/reset starts both peaks again from zero."""
        client = connect(emulator_factory(clock=clock, latency=10.0))
        _submit(client, make_pdf())
        client.post("/_emulator/reset").raise_for_status()
        stats = _stats(client)
        assert stats["peak_executions_running"] == 0
        assert stats["peak_latest_executions_running"] == 0
        assert stats["peak_requests_per_second"] == 0
