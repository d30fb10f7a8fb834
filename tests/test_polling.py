"""Tests of `docutray_watch.polling`: learned processing times, the probe, the poll schedule."""

from __future__ import annotations

import asyncio
import math

import pytest

from docutray_watch.polling import LatencyModel, PollSchedule, probe_schedule, size_class

SMALL = 100_000  # size class 0
MEDIUM = 5 * 1024 * 1024  # size class 1
LARGE = 50 * 1024 * 1024  # size class 2


class TestSizeClass:
    @pytest.mark.parametrize(
        ("size", "expected"),
        [(0, 0), ((1 << 20) - 1, 0), (1 << 20, 1), ((10 << 20) - 1, 1), (10 << 20, 2), (LARGE, 2)],
    )
    def test_boundaries(self, size: int, expected: int) -> None:
        """Sizes fall into < 1 MiB, < 10 MiB and larger."""
        assert size_class(size) == expected


class TestLatencyModel:
    def test_unknown_step_has_no_expectation(self) -> None:
        """Before any observation expected() is None."""
        assert LatencyModel().expected("stp", SMALL) is None

    def test_constant_times_are_learned_exactly(self) -> None:
        """Equal observations give that mean and no variance."""
        model = LatencyModel()
        for _ in range(10):
            model.observe("stp", SMALL, 4.0)
        estimate = model.estimates[("stp", 0)]
        assert (estimate.count, estimate.mean, estimate.variance) == (10, 4.0, 0.0)
        assert model.expected("stp", SMALL) == pytest.approx(4.05)

    def test_mean_follows_recent_observations(self) -> None:
        """The moving mean moves towards a new level of processing time."""
        model = LatencyModel()
        for _ in range(5):
            model.observe("stp", SMALL, 2.0)
        for _ in range(40):
            model.observe("stp", SMALL, 10.0)
        assert model.estimates[("stp", 0)].mean == pytest.approx(10.0, abs=0.01)

    def test_variance_is_learned_and_widens_the_expectation(self) -> None:
        """Scattered times give a variance; expected() is at least mean + 2 std deviations."""
        model = LatencyModel()
        for value in [1.0, 5.0] * 20:
            model.observe("stp", SMALL, value)
        estimate = model.estimates[("stp", 0)]
        assert 1.0 < estimate.mean < 5.0
        assert estimate.variance > 1.0
        expected = model.expected("stp", SMALL)
        assert expected is not None
        assert expected >= estimate.mean + 2 * math.sqrt(estimate.variance)

    def test_expected_is_never_below_the_mean(self) -> None:
        """For any history, the first read is scheduled at or after the mean."""
        model = LatencyModel()
        for index, value in enumerate([3.0, 0.5, 9.0, 2.2, 7.7, 0.0, 4.4]):
            model.observe("stp", SMALL, value)
            expected = model.expected("stp", SMALL)
            assert expected is not None, index
            assert expected >= model.estimates[("stp", 0)].mean

    def test_size_classes_are_separate(self) -> None:
        """Small and large documents of one step have their own estimates."""
        model = LatencyModel()
        model.observe("stp", SMALL, 1.0)
        model.observe("stp", LARGE, 30.0)
        assert model.expected("stp", SMALL) == pytest.approx(1.05)
        assert model.expected("stp", LARGE) == pytest.approx(30.05)
        assert model.expected("stp", MEDIUM) is None
        assert model.expected("other", SMALL) is None

    @pytest.mark.parametrize("bad", [-1.0, math.nan, math.inf])
    def test_impossible_observations_are_ignored(self, bad: float) -> None:
        """Negative or non-finite durations (clock skew, bad timestamps) teach nothing."""
        model = LatencyModel()
        model.observe("stp", SMALL, bad)
        assert model.expected("stp", SMALL) is None

    def test_export_and_load(self) -> None:
        """Estimates survive a restart through export() and load()."""
        model = LatencyModel()
        model.observe("stp", SMALL, 2.0)
        model.observe("stp", SMALL, 4.0)
        restored = LatencyModel()
        restored.load(model.export())
        assert restored.expected("stp", SMALL) == model.expected("stp", SMALL)
        assert restored.estimates == model.estimates


class TestFirstReadAndRecheck:
    def test_first_read_is_unknown_without_estimate(self) -> None:
        """Without observations there is no first-read time (the probe schedule applies)."""
        assert LatencyModel().first_read("stp", SMALL) is None

    def test_first_read_adds_a_small_margin(self) -> None:
        """The first read is the mean + 2 std deviations + 0.25 % of the mean (at least 5 ms)."""
        model = LatencyModel()
        model.observe("stp", SMALL, 4.0)
        model.observe("quick", SMALL, 0.1)
        assert model.first_read("stp", SMALL) == pytest.approx(4.01)
        assert model.first_read("quick", SMALL) == pytest.approx(0.105)

    def test_first_read_lies_between_mean_and_expected(self) -> None:
        """The first read is never before the mean and never after `expected`."""
        model = LatencyModel()
        for value in [2.0, 3.0, 2.5, 6.0, 1.0]:
            model.observe("stp", SMALL, value)
            first, expected = model.first_read("stp", SMALL), model.expected("stp", SMALL)
            assert first is not None
            assert expected is not None
            assert model.estimates[("stp", 0)].mean <= first <= expected

    def test_recheck_starts_small_and_doubles(self) -> None:
        """After an early read, re-reads start at 2 % of the mean and double up to the maximum."""
        model = LatencyModel()
        model.observe("stp", SMALL, 10.0)
        schedule = model.recheck_schedule("stp", SMALL, maximum=1.0)
        assert [schedule.next_interval() for _ in range(5)] == pytest.approx(
            [0.2, 0.4, 0.8, 1.0, 1.0]
        )

    def test_recheck_without_estimate_and_capped(self) -> None:
        """Unknown steps re-read after 10 ms; the first re-read never exceeds the maximum."""
        model = LatencyModel()
        assert model.recheck_schedule("stp", SMALL, maximum=5).next_interval() == 0.01
        model.observe("slow", SMALL, 500.0)
        assert model.recheck_schedule("slow", SMALL, maximum=2).next_interval() == 2


class TestProbe:
    def test_one_probe_per_step_and_size(self) -> None:
        """Only the first claim while nothing is known becomes the probe."""
        model = LatencyModel()
        assert model.claim_probe("stp", SMALL)
        assert not model.claim_probe("stp", SMALL)
        assert model.claim_probe("stp", LARGE)
        assert model.claim_probe("other", SMALL)

    def test_released_probe_can_be_claimed_again(self) -> None:
        """A probe that gave up lets another execution probe."""
        model = LatencyModel()
        model.claim_probe("stp", SMALL)
        model.release_probe("stp", SMALL)
        assert model.claim_probe("stp", SMALL)

    def test_no_probe_once_known(self) -> None:
        """With an estimate there is nothing to probe."""
        model = LatencyModel()
        model.observe("stp", SMALL, 1.0)
        assert not model.claim_probe("stp", SMALL)

    async def test_wait_learned_wakes_on_observe(self) -> None:
        """Executions waiting for the probe wake up when it observes a duration."""
        model = LatencyModel()
        model.claim_probe("stp", SMALL)
        waiters = [asyncio.ensure_future(model.wait_learned("stp", SMALL, 30)) for _ in range(3)]
        await asyncio.sleep(0)
        assert not any(w.done() for w in waiters)
        model.observe("stp", SMALL, 2.0)
        assert await asyncio.wait_for(asyncio.gather(*waiters), 5) == [True, True, True]

    async def test_wait_learned_wakes_when_the_probe_gives_up(self) -> None:
        """Waiters also wake when the probe is released without an observation."""
        model = LatencyModel()
        model.claim_probe("stp", SMALL)
        waiter = asyncio.ensure_future(model.wait_learned("stp", SMALL, 30))
        await asyncio.sleep(0)
        model.release_probe("stp", SMALL)
        assert await asyncio.wait_for(waiter, 5) is True

    async def test_wait_learned_returns_at_once_when_known(self) -> None:
        """Nothing to wait for once an estimate exists."""
        model = LatencyModel()
        model.observe("stp", SMALL, 1.0)
        assert await model.wait_learned("stp", SMALL, 0.001) is True

    async def test_wait_learned_times_out(self) -> None:
        """Without an observation the wait ends with False after the timeout."""
        model = LatencyModel()
        assert await model.wait_learned("stp", SMALL, 0.01) is False


class TestPollSchedule:
    def test_grows_by_half_up_to_the_maximum(self) -> None:
        """Intervals start at `initial`, grow by half each time and stay at `maximum`."""
        schedule = PollSchedule(initial=1.0, maximum=5.0)
        intervals = [schedule.next_interval() for _ in range(7)]
        assert intervals == pytest.approx([1.0, 1.5, 2.25, 3.375, 5.0, 5.0, 5.0])

    def test_first_interval_once(self) -> None:
        """A `first` interval is used once, then the growing intervals start at `initial`."""
        schedule = PollSchedule(initial=1.0, maximum=4.0, growth=2.0, first=0.3)
        assert [schedule.next_interval() for _ in range(5)] == [0.3, 1.0, 2.0, 4.0, 4.0]

    def test_probe_reads_a_quarter_in_then_each_25_percent_later(self) -> None:
        """The probe reads at initial/4, then each read 25 % later than the previous one."""
        schedule = probe_schedule(initial=1.0, maximum=60.0)
        elapsed, reads = 0.0, []
        for _ in range(6):
            elapsed += schedule.next_interval()
            reads.append(elapsed)
        assert reads == pytest.approx([0.25 * 1.25**k for k in range(6)])

    def test_probe_respects_the_maximum(self) -> None:
        """No probe interval is longer than poll.max."""
        schedule = probe_schedule(initial=100.0, maximum=2.0)
        assert all(schedule.next_interval() <= 2.0 for _ in range(50))

    def test_equal_initial_and_maximum(self) -> None:
        """With initial == maximum the interval is constant."""
        schedule = PollSchedule(initial=2.0, maximum=2.0)
        assert [schedule.next_interval() for _ in range(3)] == [2.0, 2.0, 2.0]
