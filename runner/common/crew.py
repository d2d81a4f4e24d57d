"""Threads kept for the life of the process, for waves of blocking requests (`parallel`).

A ThreadPoolExecutor per wave starts its threads anew and spends a Future, a queue hand-off
and a wake-up of the waiting caller on every item: about 30 µs of CPU per request, 60 ms of a
fresh install of a thousand objects, on the cores the API server needs. Here each wave hands
`width` threads one closure; they take the next item themselves until none is left, and the
caller is woken once, when the last of them is done.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar, cast

T = TypeVar("T")
R = TypeVar("R")


class Crew:
    """Daemon threads that wait for work. There are always at least as many threads as tasks
    handed out and not finished, so a task never waits behind another one, and an item that
    starts a wave of its own cannot deadlock the crew."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._busy = 0

    def map(self, fn: Callable[[T], R], items: Sequence[T], width: int) -> list[R]:
        """[fn(item) for item in items], at most `width` at a time, in the order of `items`.

        The first exception stops the wave: no item starts after it, the ones running finish
        (nothing is left mid-request behind the caller), and it is raised. So is an
        interruption of the caller (Ctrl-C), once the running items have finished."""
        width = min(width, len(items))
        if width <= 1:
            return [fn(item) for item in items]
        wave = _Wave(fn, items, width)
        self._hand_out(wave.work, width)
        wave.wait()
        return wave.results()

    def _hand_out(self, task: Callable[[], None], copies: int) -> None:
        with self._lock:
            self._busy += copies
            missing, self._threads = (max(0, self._busy - self._threads),
                                      max(self._threads, self._busy))
        for _ in range(missing):
            threading.Thread(target=self._serve, name=self._name, daemon=True).start()
        for _ in range(copies):
            self._tasks.put(task)

    def _serve(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                task()
            finally:
                with self._lock:
                    self._busy -= 1


class _Wave(Generic[T, R]):
    """One call of Crew.map: the items, who takes which, the results and the first error."""

    def __init__(self, fn: Callable[[T], R], items: Sequence[T], width: int) -> None:
        self._fn = fn
        self._items = items
        self._results: list[R | None] = [None] * len(items)
        self._next = 0
        self._running = width
        self._failed: BaseException | None = None
        self._lock = threading.Lock()
        self._done = threading.Event()

    def work(self) -> None:
        while True:
            with self._lock:
                index = self._next
                if index >= len(self._items) or self._failed is not None:
                    self._running -= 1
                    if not self._running:
                        self._done.set()
                    return
                self._next += 1
            try:
                self._results[index] = self._fn(self._items[index])
            except BaseException as e:  # raised by the caller, after the wave
                with self._lock:
                    if self._failed is None:
                        self._failed = e

    def wait(self) -> None:
        try:
            self._done.wait()
        except BaseException:
            with self._lock:  # no further item starts; the running ones finish
                self._next = len(self._items)
            self._done.wait()
            raise

    def results(self) -> list[R]:
        if self._failed is not None:
            raise self._failed
        return cast("list[R]", self._results)  # every item ran: none is left None
