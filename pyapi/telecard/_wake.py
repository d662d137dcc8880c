"""The core's one hook for waiters that are not threads (telecard.aio's tasks)."""

from __future__ import annotations

import threading
from collections.abc import Callable


class WakingCondition(threading.Condition):
    """A threading.Condition whose notifications also call its `wakers` (with the lock held).

    A waker must be quick and must not raise: it is called wherever the condition is
    notified, on the notifying thread. `wakers` is changed only with the lock held. Only
    notify() is overridden: notify_all() is notify() of every waiter (CPython's
    threading.Condition), so it wakes them too."""

    def __init__(self, lock: threading.Lock | threading.RLock | None = None) -> None:
        super().__init__(lock)
        self.wakers: list[Callable[[], None]] = []

    def notify(self, n: int = 1) -> None:
        super().notify(n)
        for waker in self.wakers:
            waker()
