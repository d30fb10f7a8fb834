"""`Outages`: the time a node could not reach the cluster database, as a pause for deadlines."""

from __future__ import annotations

from docutray_watch.cluster.outages import Outages


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_outage_time_after_a_first_try_counts_and_earlier_time_does_not() -> None:
    """An outage of 10 s counts fully for a step begun before it, partly for one begun during
    it, not at all for one begun after it; a lasting outage grows until the database is back."""
    clock = Clock()
    outages = Outages(clock)
    outages.down("refused")
    clock.now = 1010.0
    outages.up()
    assert outages.paused_between(990.0) == 10.0
    assert outages.paused_between(1004.0) == 6.0
    assert outages.paused_between(1015.0) == 0.0
    clock.now = 1020.0
    outages.down("refused again")
    clock.now = 1023.0
    assert outages.paused_between(990.0) == 13.0  # still down: counted up to now
    assert outages.reason is not None
    assert "cannot reach the cluster database" in outages.reason
    assert "refused again" in outages.reason


def test_a_second_failure_does_not_restart_the_outage_and_back_wakes_the_worker() -> None:
    """Failed beats in a row are one outage from the first; `up` ends it, clears the reason
    and sets `came_back`; `up` without an outage changes nothing."""
    clock = Clock()
    outages = Outages(clock)
    outages.up()
    assert not outages.came_back.is_set()
    outages.down("a")
    clock.now = 1005.0
    outages.down("b")
    clock.now = 1008.0
    outages.up()
    assert outages.reason is None
    assert outages.came_back.is_set()
    assert outages.paused_between(0.0) == 8.0
