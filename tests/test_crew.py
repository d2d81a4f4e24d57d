"""runner.common.crew: the threads every wave of requests runs on. Plain values and threads;
no server is needed to pin how the items are shared out."""

from __future__ import annotations

import os
import signal
import threading
import time
from types import FrameType

import pytest

from runner.common.crew import Crew


class _Gauge:
    """How many calls are inside at once, and the most there ever were."""

    def __init__(self) -> None:
        self.now = 0
        self.most = 0
        self.started = 0
        self._lock = threading.Lock()

    def __enter__(self) -> None:
        with self._lock:
            self.now += 1
            self.started += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *_: object) -> None:
        with self._lock:
            self.now -= 1


def _crew_threads(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name)


def test_results_come_in_the_order_of_the_items_with_at_most_width_running() -> None:
    crew, gauge = Crew("test-order"), _Gauge()

    def square(n: int) -> int:
        with gauge:
            time.sleep(0.002)
            return n * n

    assert crew.map(square, list(range(60)), 5) == [n * n for n in range(60)]
    assert gauge.most == 5


def test_threads_outlive_a_wave_and_serve_the_next() -> None:
    crew = Crew("test-reuse")
    crew.map(lambda n: time.sleep(0.001), list(range(40)), 8)
    crew.map(lambda n: time.sleep(0.001), list(range(40)), 8)
    crew.map(lambda n: time.sleep(0.001), list(range(40)), 3)
    assert _crew_threads("test-reuse") == 8


def test_a_narrow_or_single_wave_runs_in_the_callers_thread() -> None:
    crew = Crew("test-inline")
    caller = threading.get_ident()
    assert crew.map(lambda n: threading.get_ident(), [1], 8) == [caller]
    assert crew.map(lambda n: threading.get_ident(), [1, 2, 3], 1) == [caller] * 3
    assert crew.map(lambda n: n, [], 8) == []
    assert _crew_threads("test-inline") == 0


def test_the_first_error_stops_the_wave_and_is_raised() -> None:
    crew, gauge = Crew("test-error"), _Gauge()

    def fail_at_three(n: int) -> int:
        with gauge:
            if n == 3:
                raise ValueError("item 3")
            time.sleep(0.005)
            return n

    with pytest.raises(ValueError, match="item 3"):
        crew.map(fail_at_three, list(range(200)), 2)
    assert gauge.started < 10  # not the 200 a pool.map would have gone on to send
    assert gauge.now == 0  # and none was left running behind the caller


def test_a_wave_started_inside_a_wave_does_not_wait_for_a_free_thread() -> None:
    # Every outer item holds its thread while its inner wave runs; the crew grows instead.
    crew = Crew("test-nested")
    sums = crew.map(lambda n: sum(crew.map(lambda m: m * n, list(range(10)), 4)),
                    list(range(6)), 6)
    assert sums == [45 * n for n in range(6)]


def test_an_interrupted_caller_starts_no_further_item_and_waits_for_the_running_ones() -> None:
    class Interrupted(Exception):
        pass

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise Interrupted

    crew, gauge = Crew("test-interrupt"), _Gauge()
    finished: list[int] = []

    def item(n: int) -> None:
        with gauge:
            if n == 2:
                os.kill(os.getpid(), signal.SIGINT)  # the caller is waiting in map()
            time.sleep(0.05)
            finished.append(n)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        with pytest.raises(Interrupted):
            crew.map(item, list(range(100)), 2)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert gauge.started < 10
    assert gauge.now == 0
    assert len(finished) == gauge.started
