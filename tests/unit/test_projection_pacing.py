"""The projection runner's pacing (projections.runner.MIN_BATCH_INTERVAL_S): under load the
starts of a projection's batches that applied events are that far apart at least, so the events
recorded meanwhile are applied together; an idle projection is never held back."""

from __future__ import annotations

import threading

import pytest

from projections import runner
from projections.runner import MIN_BATCH_INTERVAL_S, _Pacer


class Clock:
    """time.monotonic for the runner module; waiting on the stop event moves it on."""

    def __init__(self) -> None:
        self.now = 0.0
        self.waits: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(runner.time, "monotonic", clock.monotonic)
    return clock


def pacer_on(clock: Clock) -> _Pacer:
    stop = threading.Event()
    stop.wait = clock.wait  # type: ignore[method-assign]
    return _Pacer(stop)


def test_the_first_batch_and_batches_after_empty_ones_start_at_once(clock: Clock) -> None:
    pacer = pacer_on(clock)
    pacer.wait()
    assert pacer.applied(0) == 0
    pacer.wait()
    assert pacer.applied(0) == 0
    pacer.wait()
    assert clock.waits == []


def test_a_batch_right_after_one_that_applied_waits_out_the_interval(clock: Clock) -> None:
    pacer = pacer_on(clock)
    pacer.wait()
    started = clock.now
    clock.now += 0.004  # the batch took 4 ms
    assert pacer.applied(7) == 7
    pacer.wait()
    assert clock.waits == [pytest.approx(MIN_BATCH_INTERVAL_S - 0.004)]
    assert clock.now == pytest.approx(started + MIN_BATCH_INTERVAL_S)


def test_at_the_interval_no_wait_and_one_tick_before_it_the_rest(clock: Clock) -> None:
    pacer = pacer_on(clock)
    pacer.wait()
    pacer.applied(1)
    clock.now += MIN_BATCH_INTERVAL_S  # exactly at the edge: no wait
    pacer.wait()
    assert clock.waits == []
    pacer.applied(1)
    clock.now += MIN_BATCH_INTERVAL_S - 0.001  # just before it: the last millisecond
    pacer.wait()
    assert clock.waits == [pytest.approx(0.001)]


def test_an_empty_batch_does_not_restart_the_interval(clock: Clock) -> None:
    pacer = pacer_on(clock)
    pacer.wait()
    pacer.applied(3)
    clock.now += MIN_BATCH_INTERVAL_S / 2
    pacer.wait()  # waits out the other half
    pacer.applied(0)  # nothing new: the interval still counts from the batch that applied
    pacer.wait()  # so the next batch may start at once
    assert clock.waits == [pytest.approx(MIN_BATCH_INTERVAL_S / 2)]
