"""The `face` fixture's machinery: a Card driven through the threaded API or through
telecard.aio, behind the same blocking calls, so one behavioural test covers both faces.

The asyncio face runs an event loop on a thread of its own, in debug mode with a short
slow-callback threshold; the test's calls go to it with `asyncio.run_coroutine_threadsafe`.
Closing the face fails the test if the loop logged a slow callback (a blocking call on it)."""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, TypeVar

import telecard.aio
from telecard import Card

_T = TypeVar("_T")
WAIT = 60.0  # longest a test waits for one coroutine: a hang fails, it does not block
SLOW = 0.1  # the loop's slow-callback threshold here (test_aio checks 0.08 on its own)


class SlowCallbacks(logging.Handler):
    """Collects asyncio's "Executing <callback> took N seconds" warnings."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.found: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("Executing "):
            self.found.append(message)


class LoopThread:
    """An event loop in debug mode on a thread of its own."""

    def __init__(self, slow: float = SLOW) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = slow
        self.slow = SlowCallbacks()
        logging.getLogger("asyncio").addHandler(self.slow)
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, awaitable: Awaitable[_T]) -> _T:
        async def wrapped() -> _T:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrapped(), self.loop).result(WAIT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
        logging.getLogger("asyncio").removeHandler(self.slow)


class Blocking:
    """An AsyncCard or AsyncCallChannel behind blocking calls: each coroutine (or awaitable
    result) runs on the loop and its result is awaited; channels come back wrapped."""

    def __init__(self, target: Any, face: AsyncFace) -> None:
        self._target = target
        self._face = face

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if inspect.isawaitable(value):  # AsyncCard.spans
            return self._face.unwrap(self._face.loop.run(value))
        if not callable(value) or isinstance(value, type):
            return value
        method: Callable[..., Any] = value

        def call(*args: Any, **kwargs: Any) -> Any:
            if inspect.iscoroutinefunction(method):
                result = self._face.loop.run(method(*args, **kwargs))
            else:
                result = method(*args, **kwargs)
                if inspect.isawaitable(result):  # AsyncCard.free_channel
                    result = self._face.loop.run(result)
            return self._face.unwrap(result)

        return call

    def __repr__(self) -> str:
        return f"<Blocking {self._target!r}>"

    def __enter__(self) -> Blocking:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._face.loop.run(self._target.__aexit__(exc_type, exc, tb))


class AsyncFace:
    """telecard.aio opened on `device`, with its channels behind Blocking (one each)."""

    def __init__(self, device: str, **kwargs: Any) -> None:
        self.loop = LoopThread()
        self.card: telecard.aio.AsyncCard = self.loop.run(telecard.aio.open(device, **kwargs))
        self._wrapped: dict[int, Blocking] = {}

    def unwrap(self, result: Any) -> Any:
        if isinstance(result, telecard.aio.AsyncCallChannel):
            return self._wrapped.setdefault(id(result), Blocking(result, self))
        return result

    def close(self) -> None:
        try:
            self.loop.run(self.card.close())
        finally:
            self.loop.close()
        assert self.loop.slow.found == [], "a blocking call on the event loop"


class Face:
    """A card on one face: `card` as the test drives it, `sync` the Card underneath."""

    def __init__(self, name: str, device: str, **kwargs: Any) -> None:
        self.name = name
        self._async = AsyncFace(device, **kwargs) if name == "async" else None
        self.sync: Card
        self.card: Any
        if self._async is None:
            self.sync = self.card = Card.open(device, **kwargs)
        else:
            self.sync = self._async.card.sync
            self.card = Blocking(self._async.card, self._async)
        self._closed = False

    def close(self) -> None:
        """Close the card (at most once); on the asyncio face, fail on a slow callback."""
        if self._closed:
            return
        self._closed = True
        if self._async is None:
            self.sync.close()
        else:
            self._async.close()


def open_face(name: str, device: str, **kwargs: Any) -> Face:
    """Card.open(device, **kwargs) through face `name` ("sync" or "async")."""
    return Face(name, device, **kwargs)
