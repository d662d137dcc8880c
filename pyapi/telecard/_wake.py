"""The core's one hook for waiters that are not threads (telecard.aio's tasks)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class WakingCondition(threading.Condition):
    """A threading.Condition whose notifications also call its `wakers`.

    A waker is called on the notifying thread with the lock held, so it sees every change
    made before the notification (the core notifies after each change a waiter's predicate
    reads); it returns True once it is done, and is then dropped. It must be quick and must
    not raise. `wakers` is changed only with the lock held. Only notify() is overridden:
    notify_all() is notify() of every waiter (CPython's threading.Condition)."""

    def __init__(self, lock: threading.Lock | threading.RLock | None = None) -> None:
        super().__init__(lock)
        self.wakers: list[Callable[[], bool]] = []

    def notify(self, n: int = 1) -> None:
        super().notify(n)
        if self.wakers:
            self.wakers = [waker for waker in self.wakers if not waker()]
