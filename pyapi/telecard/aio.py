"""telecard.aio: the card from asyncio, every channel driven from one event loop::

    import telecard.aio

    async def main() -> None:
        async with telecard.aio.open("/dev/ttyUSB0") as card:
            async with card.free_channel() as channel:
                state = await channel.call("3301")
                if state != channel.State.ANSWERED and channel.cause() == channel.Cause.BUSY:
                    print("Busy, try again")

`AsyncCard` and `AsyncCallChannel` are the asyncio faces of `Card` and `CallChannel`, with the
same vocabulary and outcomes (`State`, `Cause`, `cause()`, `details`, ownership): the call logic
is theirs, run in two halves. Commands to the card wait for the link's round trip (for seconds
when it stalls), so never on the event loop: a call's MAKE_CALL goes to the C driver's own
threads (`Device.command_pool()`), which never take the GIL, its result coming back through one
reaping thread; the other commands run on Python threads the AsyncCard owns. Each kind is
bounded by `workers` and started as needed. Waits for a call's news are awaits, woken by
whichever thread hands the card's events out. An AsyncCard belongs to the loop it was opened
on: from another loop or thread, its coroutines raise RuntimeError before reaching the card.

Cancellation: cancelling a task in `call()` or `start_call()` (also by `asyncio.timeout()` or a
`TaskGroup` whose other task failed) is the application abandoning the call, so the call being
placed is cleared towards the network with cause 16 (normal call clearing), and CancelledError
(TimeoutError from `asyncio.timeout()`) propagates once the call has ended: the channel is then
IDLE, ready for the next call (a task cancelled again meanwhile leaves at once, the clearing
going on without it). The call's own `seconds_timeout` is the card giving up, as in the
threaded API: the call is cleared with cause 102 (recovery on timer expiry), `cause()` is
TIMEOUT and call() returns IDLE. Cancelling another wait (`answer()`, `ring()`,
`wait_for_idle()`, ...) leaves the call as it is: `async with channel:` (or `release()`) clears
it on the way out; a cancelled `hang_up()` or `reject()` still clears the call, without the
task waiting for its end. An incoming call taken by `AsyncCard.wait_for_incoming_call()` just
as it is cancelled is released (cleared, cause 16), and so is a channel reserved by a
cancelled `reserve()`. Such undoing is arranged as the task is cancelled and done off the loop
once the command is back (by the thread that ran it, or for MAKE_CALL by a thread the reaper
starts): it happens even if the loop stops first (asyncio.run returning, say).

Closing the AsyncCard (leaving `async with telecard.aio.open(...)`) clears every call still up,
as `Card.close()` does, and tasks still waiting see what threads would see (State.ERROR, or
DeviceLostError for new requests).
"""

from __future__ import annotations

import _thread
import asyncio
import functools
import itertools
import logging
import os
import queue
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Iterable
from types import TracebackType
from typing import Any, ClassVar, Final, Generic, TypeAlias, TypeVar

from . import q850
from ._cdriver import lib
from ._wake import WakingCondition
from .address import Number
from .card import DEFAULT_BEARERS, WATCHDOG, Card, Span
from .causes import Cause, reject_value
from .channel import _LINK_ERRORS, ANSWER_WAIT, CLEAR_WAIT, CallChannel, CallDetails, _Placing
from .device import CommandPool, CommandResult
from .errors import DeviceLostError, TelecardError
from .events import MAXSIZE, Event, EventReader
from .registers import Bearer
from .states import State
from .statistics import CardStatistics
from .timeouts import check_timeout, wait_time

__all__ = [
    "WORKERS",
    "AsyncCallChannel",
    "AsyncCard",
    "AsyncEvents",
    "Opening",
    "Reserving",
    "open",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_Ended: TypeAlias = tuple[bool, Any]  # a job's fn returned (True, result) or raised (False, exc)
# Aliases: inside AsyncCallChannel, State and Cause name its class attributes.
_State: TypeAlias = State
_Cause: TypeAlias = Cause

WORKERS: Final[int] = lib.TC_MAX_OUTSTANDING
"""Default bound of the threads an AsyncCard runs the card's commands on (of the driver's own
for MAKE_CALL, of Python threads for the rest): one for each request the driver keeps in
flight to the card (its TC_MAX_OUTSTANDING; more would wait in the driver for a tag), far
fewer threads than a 16-span card's channels. Against a 16-span card in another process, 128
Python threads made 7-17 % more calls/s than 64, which kept the card short of requests
(benchmarks/bench_api.py, 4a)."""


def open(  # noqa: A001 - telecard.aio.open, as Card.open
    device: str | os.PathLike[str],
    *,
    timeout: float = 0.25,
    retries: int = 3,
    keep_calls: bool = False,
    watchdog: float | None = WATCHDOG,
    clock: Callable[[], float] = time.monotonic,
    observe: bool = False,
    bearers: Iterable[Bearer] = DEFAULT_BEARERS,
    workers: int = WORKERS,
) -> Opening:
    """Open the card at `device` (as `Card.open`, with the same arguments):
    `async with telecard.aio.open(device) as card:`, or `card = await telecard.aio.open(...)`
    and later `await card.close()`. `workers`: the threads the card's commands run on (see
    WORKERS)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int of at least 1, not {workers!r}")

    def opener() -> Card:
        return Card.open(
            device,
            timeout=timeout,
            retries=retries,
            keep_calls=keep_calls,
            watchdog=watchdog,
            clock=clock,
            observe=observe,
            bearers=bearers,
        )

    return Opening(opener, workers)


class Opening:
    """What `open()` returns: awaitable (the AsyncCard) and an async context manager."""

    def __init__(self, opener: Callable[[], Card], workers: int) -> None:
        self._opener = opener
        self._workers = workers
        self._card: AsyncCard | None = None

    def __await__(self) -> Generator[Any, None, AsyncCard]:
        return self._open().__await__()

    async def _open(self) -> AsyncCard:
        bridge = _Bridge(asyncio.get_running_loop(), self._workers)
        opening = bridge.submit(self._opener)
        try:
            card = await opening.future
        except asyncio.CancelledError:
            bridge.abandon(opening, Card.close)  # a Card opened for nobody is closed again
            bridge.close()
            raise
        except BaseException:
            bridge.close()
            raise
        return AsyncCard(card, bridge)

    async def __aenter__(self) -> AsyncCard:
        self._card = await self._open()
        return self._card

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._card is not None:
            await self._card.close()


class _Job(Generic[_T]):
    """`fn(*args)` submitted to the pool. `future` is the awaiting task's, cancelled with
    it; a task that gives the job up has `_Bridge.abandon()` undo what it did (a call placed,
    a channel reserved). Cheaper than `asyncio.shield()` on every command: one future, one
    hop back to the task."""

    __slots__ = ("future", "fn", "args", "_lock", "_ended", "_on_end")

    def __init__(self, future: asyncio.Future[_T], fn: Callable[..., _T], args: tuple[object, ...]
                 ) -> None:
        self.future = future
        self.fn = fn
        self.args = args
        # Between the worker and _Bridge.abandon(), which may run after the loop has gone:
        self._lock = _thread.allocate_lock()
        self._ended: _Ended | None = None
        self._on_end: Callable[[bool, Any], None] | None = None

    def end(self, ok: bool, value: Any, *, apart: bool = False) -> None:
        """Once fn has returned (`ok`) or raised `value`: what an abandon() arranged
        meanwhile runs now, on this thread (a worker's), or on a thread of its own
        (`apart`: for the reaper of the driver's pool, which must not wait for it)."""
        with self._lock:
            self._ended = (ok, value)
            on_end = self._on_end
        if on_end is None:
            return
        if apart:
            _apart_or_here(on_end, ok, value)
        else:
            on_end(ok, value)


def _apart(fn: Callable[..., object], *args: object) -> None:
    """`fn(*args)` on a threading.Thread of its own. Thread.start() waits for the new thread
    to run (in a busy process, as long as the GIL takes to come round), so the caller, often
    the loop, only starts a `_thread` thread, which starts the Thread. `fn` does not run on
    the `_thread` thread itself: what it runs may ask threading which thread it is on
    (Thread.join(), logging), and that registers a thread threading did not start for good."""
    _thread.start_new_thread(_start_thread, (fn, args))


def _start_thread(fn: Callable[..., object], args: tuple[object, ...]) -> None:
    try:
        threading.Thread(target=fn, args=args, daemon=True).start()
    except RuntimeError:  # no thread to be had: run it here rather than not at all
        fn(*args)


def _apart_or_here(fn: Callable[..., object], *args: object) -> None:
    """`_apart()`, off the loop: when no thread is to be had, `fn` runs on the caller's
    thread (which it then holds up) rather than not at all."""
    try:
        _apart(fn, *args)
    except RuntimeError:
        fn(*args)


def _call(fn: Callable[..., Any], *args: object) -> _Ended:
    """`fn(*args)`'s outcome: (True, what it returned) or (False, what it raised)."""
    try:
        return True, fn(*args)
    except BaseException as exc:  # the awaiting task's to see, whatever it is
        return False, exc


def _settle(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    elif isinstance(value, StopIteration):  # a future refuses it (it would end the awaiter)
        failed = RuntimeError(f"{value!r} raised by a command's job")
        failed.__cause__ = value
        future.set_exception(failed)
    else:
        future.set_exception(value)


class _Bridge:
    """An AsyncCard's threads and its way back to the event loop.

    `submit()` runs a function on one of up to `workers` threads, started as the work needs
    them (commands to the card wait for the link there); `until()` awaits a condition of the
    core, its wakers posting the news. Everything other threads hand the loop goes through
    `post()`, which wakes the loop once for as many callbacks as arrive meanwhile: under
    load, one wake-up serves many calls."""

    def __init__(self, loop: asyncio.AbstractEventLoop, workers: int) -> None:
        self.loop = loop
        self._posted: deque[tuple[Callable[..., object], tuple[object, ...]]] = deque()
        self._lock = threading.Lock()
        self._scheduled = False  # a _run_posted is on its way to the loop
        self._jobs: queue.SimpleQueue[_Job[Any] | None] = queue.SimpleQueue()
        self.workers = workers
        self._threads = 0
        # A token for each job done (as ThreadPoolExecutor's semaphore): workers append, only
        # the loop pops, so a deque's atomic append/pop need no lock.
        self._idle: deque[None] = deque()

    def check_loop(self) -> None:
        """RuntimeError unless called on the loop (the futures, the thread count and the
        wakers' posts are that loop's alone): before anything reaches the card."""
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not self.loop:
            raise RuntimeError(
                "an AsyncCard belongs to the event loop it was opened on: use it from that"
                " loop's thread (from another thread, asyncio.run_coroutine_threadsafe)"
            )

    def close(self) -> None:
        """End the threads once the jobs already submitted are done."""
        for _ in range(self._threads):
            self._jobs.put(None)

    def post(self, callback: Callable[..., object], *args: object) -> None:
        """Call `callback(*args)` on the loop (from any thread)."""
        self._posted.append((callback, args))
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self.loop.call_soon_threadsafe(self._run_posted)
        except RuntimeError:  # the loop has closed: nobody is waiting any more
            pass

    def _run_posted(self) -> None:
        with self._lock:
            self._scheduled = False
        posted = self._posted
        while posted:
            callback, args = posted.popleft()
            try:
                callback(*args)
            except Exception as exc:  # the rest of the batch is others' news: hand it on
                self.loop.call_exception_handler(
                    {"message": f"telecard.aio: {callback!r} failed", "exception": exc}
                )

    def submit(self, fn: Callable[..., _T], *args: object, apart: bool = False) -> _Job[_T]:
        """`fn(*args)` on a worker thread (`apart`: on a thread of its own); the job's
        future (of the loop) gets its outcome."""
        self.check_loop()
        job = _Job(self.loop.create_future(), fn, args)
        if apart:
            _apart(self._do, job)
            return job
        self._jobs.put(job)
        if self._idle:
            self._idle.pop()
        elif self._threads < self.workers:
            self._threads += 1
            _apart(self._work)
        return job

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._do(job)
            self._idle.append(None)

    def _do(self, job: _Job[Any]) -> None:
        self.settle(job, *_call(job.fn, *job.args))

    def settle(self, job: _Job[Any], ok: bool, value: Any, *, apart: bool = False) -> None:
        """On the thread that ran `job`: its outcome, to an abandon() (see _Job.end) and to
        the awaiting task."""
        job.end(ok, value, apart=apart)
        self.post(_settle, job.future, ok, value)

    def abandon(self, job: _Job[_T], undo: Callable[[_T], object]) -> asyncio.Future[_Ended]:
        """On the loop, for a task that gives `job` up: `undo(result)` runs on a worker once
        the job has returned (nothing when it raised), even if this loop has stopped by then;
        so what the job did (a call placed, a channel reserved, a card opened) is undone
        though no task is left to see its result. The future gets the job's outcome, (True,
        result) or (False, exception), once that has run."""
        undone: asyncio.Future[_Ended] = self.loop.create_future()

        def on_end(ok: bool, value: Any) -> None:
            if ok:
                _undo(undo, value)
            self.post(_succeed, undone, (ok, value))

        with job._lock:
            ended = job._ended
            if ended is None:
                job._on_end = on_end
                return undone
        if ended[0]:
            # A thread of its own: the undo may wait (a call's clearing), the pool may be
            # busy or already closed.
            _apart(on_end, *ended)
        else:
            undone.set_result(ended)
        return undone

    async def until(
        self, cond: WakingCondition, predicate: Callable[[], bool], timeout: float | None
    ) -> bool:
        """Await `predicate()` (called with `cond` held) coming true; False when `timeout`
        seconds pass first (as `cond.wait_for()`, but the loop waits, not a thread)."""
        self.check_loop()
        with cond:  # most often already true (a busy call's news came with its response)
            if predicate():
                return True
        woken: asyncio.Future[bool] = self.loop.create_future()
        fired = False  # the waker saw the predicate true (and dropped itself)

        def wake() -> bool:  # on the notifying thread, cond held
            nonlocal fired
            if predicate():
                fired = True
                self.post(_succeed, woken, True)
            return fired

        with cond:
            if predicate():
                return True
            cond.wakers.append(wake)
        timer = None if timeout is None else self.loop.call_later(timeout, _succeed, woken, False)
        try:
            if await woken:
                return True
            with cond:
                return predicate()
        finally:
            if timer is not None:
                timer.cancel()
            if not fired:  # read without the lock: once True, the waker has gone
                with cond:
                    if wake in cond.wakers:
                        cond.wakers.remove(wake)


def _undo(undo: Callable[[_T], object], result: _T) -> None:
    """On a worker: undo what an abandoned job did; a failure is logged (nobody waits)."""
    try:
        undo(result)
    except TelecardError as exc:  # not undone because the card went: nothing left up
        log.debug("undoing an abandoned job: %s", exc)
    except Exception:
        log.exception("undoing an abandoned job failed")


def _succeed(future: asyncio.Future[_T], result: _T) -> None:
    if not future.done():
        future.set_result(result)


def _release_taken(channel: CallChannel | None) -> None:
    """Undo of a reservation or an incoming call taken for a task that gave it up."""
    if channel is not None:
        channel.release()


class AsyncCard:
    """An open card from asyncio: obtain one from `telecard.aio.open()`.

    Methods that talk to the card are coroutines; `channel()`, `channels()`, `lost`,
    `statistics()` and the channels' `state()`, `cause()` and `details` only read what the
    host knows, at once. `sync` is the underlying `Card`, for what this face does not cover
    (its blocking methods must then go through `asyncio.to_thread`)."""

    def __init__(self, card: Card, bridge: _Bridge) -> None:
        """Use `telecard.aio.open()`: it opens the Card off the event loop."""
        self.sync: Final = card
        self._bridge = bridge
        self._closed = False
        self._closing: asyncio.Future[None] | None = None  # Card.close() under way, or done
        self._faces = {c: AsyncCallChannel(self, c) for c in card.channels()}
        self._cleanups: set[asyncio.Future[object]] = set()
        # MAKE_CALL goes to the driver's own threads, which take no GIL, its result coming
        # back through the reaper; an observer places no call.
        self._pool: CommandPool | None = None
        self._pooled: dict[int, _Job[Any]] = {}  # token: the job awaiting the result
        self._tokens = itertools.count()
        if not card.observer:
            self._pool = card._dev.command_pool(min(bridge.workers, lib.TC_MAX_OUTSTANDING))
            _apart(self._reap, self._pool)

    def __repr__(self) -> str:
        return f"<AsyncCard {self.sync!r}>"

    async def __aenter__(self) -> AsyncCard:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """`Card.close()`: clear every call still up (unless opened with keep_calls), then
        close the device; what still waits on a channel sees the card gone. Cancelled, the
        closing goes on; close() again waits for it."""
        self._bridge.check_loop()
        if self._closing is None:
            # A thread of its own: the pool's may all be held by commands on a stalled link.
            self._closing = self._bridge.submit(self.sync.close, apart=True).future
            self._closed = True
            self._closing.add_done_callback(lambda _: self._bridge.close())
        await asyncio.shield(self._closing)

    # -- reading --------------------------------------------------------------------------

    @property
    def lost(self) -> bool:
        """`Card.lost`: the device has gone, every channel is in State.ERROR."""
        return self.sync.lost

    @property
    def spans(self) -> Awaitable[tuple[Span, ...]]:
        """`await card.spans`: every span, read from the card now."""
        return self._run(lambda: self.sync.spans)

    @property
    def calls_waiting(self) -> int:
        """Incoming calls waiting for `wait_for_incoming_call()`."""
        return self.sync.calls_waiting

    def statistics(self) -> CardStatistics:
        """`Card.statistics()`: attempts and outcomes by span, direction and cause."""
        return self.sync.statistics()

    def channel(self, span: int, number: int) -> AsyncCallChannel:
        """The call channel on `span` (0-based) with timeslot `number`."""
        return self._faces[self.sync.channel(span, number)]

    def channels(self, span: int | None = None) -> tuple[AsyncCallChannel, ...]:
        """Every call channel, or those of one span, in span and timeslot order."""
        return tuple(self._faces[c] for c in self.sync.channels(span))

    # -- ownership and incoming calls -----------------------------------------------------

    def free_channel(self, span: int | None = None) -> Reserving:
        """A free channel, reserved for the caller as `Card.free_channel()` does: either
        `channel = await card.free_channel()` (None when none is free; `await
        channel.release()` gives it up), or `async with card.free_channel() as channel:`,
        which releases it at the end of the block (`channel` is None when none was free)."""
        self.sync.channels(span)  # ValueError for a span the card lacks, at once
        return Reserving(self, span)

    async def set_overlap_digits(self, span: int, digits: int) -> None:
        """`Card.set_overlap_digits()`: overlap receiving on `span` (written on the pool)."""
        await self._run(self.sync.set_overlap_digits, span, digits)

    async def wait_for_incoming_call(
        self, seconds_timeout: float | None = None
    ) -> AsyncCallChannel | None:
        """`Card.wait_for_incoming_call()`: the channel holding a new incoming call, owned
        by the caller until it releases it; None on timeout."""
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        incoming = self.sync._incoming
        while True:
            taking = self._submit(incoming.take, 0.0, self.sync.check_usable)
            channel = await self._kept(taking, _release_taken)
            if channel is not None:
                return self._faces[channel]
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                return None
            await self._bridge.until(
                incoming._cond,
                lambda: bool(incoming._calls) or self.sync.lost or self.sync._closed,
                remaining,
            )

    # -- events ---------------------------------------------------------------------------

    def events(self, timeout: float | None = None, *, maxsize: int = MAXSIZE) -> AsyncEvents:
        """`async for event in card.events():` the card's events from now on, as
        `Card.events()` queues them (see EventReader): the iteration ends after `timeout`
        seconds without an event, or when the card is closed or lost."""
        return AsyncEvents(self.sync.events(timeout, maxsize=maxsize), timeout, self._bridge)

    # -- the pool -------------------------------------------------------------------------

    def _submit(self, fn: Callable[..., _T], *args: object) -> _Job[_T]:
        """`fn(*args)` on the pool; DeviceLostError once the card is closed."""
        if self._closed:
            raise DeviceLostError("the card is closed")
        return self._bridge.submit(self._then_hand_out, fn, *args)

    def _place(
        self,
        channel: CallChannel,
        call_to: str | Number,
        call_from: str | Number,
        bearer: Bearer,
        overlap: bool = False,
    ) -> _Job[int]:
        """On the loop: `channel._start()` as a job, its MAKE_CALL run by the driver's pool
        (the rest of it at once, and on the reaper once the card answers); on the workers
        instead when the pool is full or another command holds the channel."""
        self._bridge.check_loop()
        if self._closed:
            raise DeviceLostError("the card is closed")
        start = functools.partial(channel._start, overlap=overlap)
        pool = self._pool
        if pool is None or not channel._command_lock.acquire(blocking=False):
            return self._submit(start, call_to, call_from, bearer)
        try:
            placing = channel._placing(call_to, call_from, bearer, overlap)
        except BaseException:
            channel._command_lock.release()
            raise
        channel._command_begin(None)
        job: _Job[int] = _Job(self._bridge.loop.create_future(), self._placed, (channel, placing))
        token = next(self._tokens)
        self._pooled[token] = job
        queued = False
        try:
            queued = pool.submit(
                token,
                channel.span,
                channel.number,
                placing.cmd,
                called=placing.called,
                calling=placing.calling,
                setup=placing.setup,
            )
        finally:
            if not queued:
                del self._pooled[token]
                channel._command_end(placing.cmd, None, None)
                channel._command_lock.release()
        if queued:
            return job
        return self._submit(start, call_to, call_from, bearer)

    def _placed(
        self, channel: CallChannel, placing: _Placing, outcome: CommandResult | TelecardError
    ) -> int:
        """On the reaper: the rest of `channel._start()` once its MAKE_CALL is back, the
        command lock released at its end (as there)."""
        try:
            if isinstance(outcome, CommandResult):
                channel._command_end(placing.cmd, outcome, placing.details)
                return channel._placed(placing, None)
            channel._command_end(placing.cmd, None, placing.details)
            failure = self.sync._failure(outcome)
            if failure is not outcome:
                failure.__cause__ = outcome
            return channel._placed(placing, failure)
        finally:
            channel._command_lock.release()

    def _reap(self, pool: CommandPool) -> None:
        """The reaper thread: each batch of the pool's results finishes its jobs, the news
        that came with them is handed out, then the tasks hear (one wake of the loop). A
        MAKE_CALL the link failed is finished on a thread of its own: whether the card placed
        the call is read from its registers, which may take a stalled link's while."""
        while (reaped := pool.reap(None)) is not None:
            ended = []
            for token, outcome in reaped:
                job = self._pooled.pop(token)
                if isinstance(outcome, _LINK_ERRORS):
                    # With no thread to be had, the other results wait meanwhile, for as
                    # long as the registers take to read.
                    _apart_or_here(self._finish_alone, job, outcome)
                else:
                    ended.append((job, _call(job.fn, *job.args, outcome)))
            self.sync._pump.hand_out_pending()
            for job, (ok, value) in ended:
                self._bridge.settle(job, ok, value, apart=True)

    def _finish_alone(self, job: _Job[Any], outcome: TelecardError) -> None:
        """On a thread of its own, what the reaper does for a job."""
        ok, value = _call(job.fn, *job.args, outcome)
        self.sync._pump.hand_out_pending()
        self._bridge.settle(job, ok, value)

    def _then_hand_out(self, fn: Callable[..., _T], *args: object) -> _T:
        """On a pool thread: `fn(*args)`, then the card's news that came meanwhile handed out
        by this thread, as a threaded caller does its own (the response and the events of a
        command arrive together), rather than left to the event thread."""
        try:
            return fn(*args)
        finally:
            self.sync._pump.hand_out_pending()

    async def _kept(self, job: _Job[_T], undo: Callable[[_T], object]) -> _T:
        """`job`'s result; cancelled, the task gives the job up, `undo` undoing what it did
        (`_abandon()`), before CancelledError goes on."""
        try:
            return await job.future
        except asyncio.CancelledError:
            await self._shielded(self._abandon(job, undo))
            raise

    def _abandon(self, job: _Job[_T], undo: Callable[[_T], object]) -> asyncio.Future[_Ended]:
        """`_Bridge.abandon()`, the undo handing out the news it brings as a job does."""
        return self._bridge.abandon(job, lambda result: self._then_hand_out(undo, result))

    async def _run(self, fn: Callable[..., _T], *args: object) -> _T:
        return await self._submit(fn, *args).future

    async def _shielded(self, cleanup: Awaitable[object]) -> None:
        """Run `cleanup` to its end even if the awaiting task is cancelled again."""
        task = asyncio.ensure_future(cleanup)
        self._cleanups.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._cleanups.discard)
        await asyncio.shield(task)


class Reserving:
    """What `AsyncCard.free_channel()` returns: awaitable (the channel or None) and an async
    context manager releasing the channel at its end."""

    def __init__(self, card: AsyncCard, span: int | None) -> None:
        self._card = card
        self._span = span
        self._channel: AsyncCallChannel | None = None

    def __await__(self) -> Generator[Any, None, AsyncCallChannel | None]:
        return self._reserve().__await__()

    async def _reserve(self) -> AsyncCallChannel | None:
        card = self._card
        reserving = card._submit(card.sync.free_channel, self._span)
        channel = await card._kept(reserving, _release_taken)
        return None if channel is None else card._faces[channel]

    async def __aenter__(self) -> AsyncCallChannel | None:
        self._channel = await self._reserve()
        return self._channel

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._channel is not None:
            await self._channel.__aexit__(exc_type, exc, tb)


class AsyncEvents:
    """`AsyncCard.events()`: an `EventReader` read by awaiting (`async for`, `get()`)."""

    def __init__(self, reader: EventReader, timeout: float | None, bridge: _Bridge) -> None:
        self._reader = reader
        self._bridge = bridge
        self._timeout = check_timeout(timeout, "timeout")

    def __repr__(self) -> str:
        return f"<AsyncEvents {self._reader!r}>"

    @property
    def dropped(self) -> int:
        """Events dropped because the queue was full."""
        return self._reader.dropped

    async def get(self, timeout: float | None = None) -> Event | None:
        """The next event, waiting up to `timeout` seconds (None: as long as it takes); None
        on timeout, or once the reader has ended and its queue is empty."""
        reader = self._reader
        wait = wait_time(check_timeout(timeout, "timeout"))
        await self._bridge.until(reader._cond, lambda: bool(reader._queue) or reader._ended, wait)
        return reader.get(0)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        event = await self.get(self._timeout)
        if event is None:
            self.close()
            raise StopAsyncIteration
        return event

    def close(self) -> None:
        """Stop taking events (those queued can still be read with `get()`)."""
        self._reader.close()

    async def __aenter__(self) -> AsyncEvents:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncCallChannel:
    """A `CallChannel` from asyncio: the same states, causes, details and ownership, with
    the methods that wait being coroutines (see the module doc for cancellation). Obtain
    channels from `AsyncCard`; `sync` is the underlying CallChannel."""

    State: ClassVar[type[State]] = State
    Cause: ClassVar[type[Cause]] = Cause

    def __init__(self, card: AsyncCard, channel: CallChannel) -> None:
        self._card = card
        self.sync: Final = channel
        self.span: Final = channel.span
        self.number: Final = channel.number

    def __repr__(self) -> str:
        return f"<AsyncCallChannel {self.sync!r}>"

    async def __aenter__(self) -> AsyncCallChannel:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            await self._card._shielded(self.release())
            return
        try:  # the body's exception is the one to see (as CallChannel.__exit__)
            await self._card._shielded(self.release())
        except TelecardError as failed:
            log.warning("%s: release after %r failed: %s", self.sync._name(), exc, failed)

    # -- reading: at once -----------------------------------------------------------------

    def state(self) -> _State:
        """`CallChannel.state()`."""
        return self.sync.state()

    def cause(self) -> _Cause:
        """`CallChannel.cause()`: NORMAL while a call is up; after it clears, why."""
        return self.sync.cause()

    @property
    def details(self) -> CallDetails:
        """`CallChannel.details`: the current or last call."""
        return self.sync.details

    @property
    def Details(self) -> CallDetails:  # noqa: N802 - the UAS name
        """The same as `details`, under the UAS name."""
        return self.sync.details

    @property
    def owned(self) -> bool:
        """`CallChannel.owned`."""
        return self.sync.owned

    @property
    def in_service(self) -> bool:
        """`CallChannel.in_service`."""
        return self.sync.in_service

    # -- ownership ------------------------------------------------------------------------

    async def reserve(self) -> None:
        """`CallChannel.reserve()`. Cancelled, the reservation it makes is given back."""
        await self._card._kept(self._card._submit(self.sync.reserve), lambda _: self.sync.release())

    async def release(self) -> None:
        """`CallChannel.release()`: clear any call still up, then end the reservation."""
        try:
            await self.hang_up()
            await self._card._run(self.sync.release)
        except DeviceLostError:
            # Lost, or closed (close() clears and releases on its own thread): only the
            # reservation is left to forget. Not sync.release(): until close() is done, that
            # would clear the call here, on the loop.
            self.sync._forget_ownership()

    # -- calls ----------------------------------------------------------------------------

    async def call(
        self,
        call_to: str | Number,
        call_from: str | Number = "",
        seconds_timeout: float | None = 120,
        *,
        bearer: Bearer = Bearer.SPEECH,
    ) -> _State:
        """`CallChannel.call()`: place a call and wait until it is answered or cleared; on
        `seconds_timeout` it is cleared with cause 102 (TIMEOUT). Cancelled, the call is
        cleared with cause 16 before CancelledError propagates."""
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        channel = self.sync
        placing = self._card._place(channel, call_to, call_from, bearer)
        try:
            call_id = await placing.future
            done = await self._until(lambda: channel._settled(call_id), timeout)
        except asyncio.CancelledError:
            await self._card._shielded(self._abandon(placing))
            raise
        if not done:
            await self._clear(call_id, q850.RECOVERY_ON_TIMER_EXPIRY)
        return channel._state_of(call_id)

    async def start_call(
        self,
        call_to: str | Number,
        call_from: str | Number = "",
        *,
        bearer: Bearer = Bearer.SPEECH,
        sending_complete: bool = True,
    ) -> _State:
        """`CallChannel.start_call()`: returns once the card has the call (CALL_OUTGOING, or
        the state it already reached); `sending_complete=False` dials overlap (send_digits()
        gives the rest). Cancelled, the call is cleared (cause 16)."""
        placing = self._card._place(
            self.sync, call_to, call_from, bearer, overlap=not sending_complete
        )
        try:
            await placing.future
        except asyncio.CancelledError:
            await self._card._shielded(self._abandon(placing))
            raise
        return self.sync.state()

    async def send_digits(self, digits: str, sending_complete: bool = False) -> _State:
        """`CallChannel.send_digits()`: more of the number of a call dialled overlap."""
        return await self._card._run(self.sync.send_digits, digits, sending_complete)

    async def wait_for_answer(self, seconds_timeout: float | None = 120) -> _State:
        """`CallChannel.wait_for_answer()`: wait until the call placed with start_call() is
        answered or ends; on `seconds_timeout` it is cleared with cause 102 (TIMEOUT).
        Cancelled, the call stays up, as after the other waits."""
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        channel = self.sync
        call_id = channel._placed_call()
        if not await self._until(lambda: channel._settled(call_id), timeout):
            await self._clear(call_id, q850.RECOVERY_ON_TIMER_EXPIRY)
        return channel._state_of(call_id)

    def _abandon(self, placing: _Job[int]) -> Coroutine[Any, Any, None]:
        """The call `placing` opens, abandoned by its task: cleared with cause 16 by the
        worker once MAKE_CALL is back (arranged at once, so even if the loop stops before
        anything awaits the end); the coroutine awaits the call's end."""
        channel = self.sync
        released = self._card._abandon(
            placing, lambda call_id: channel._release(call_id, q850.NORMAL_CALL_CLEARING)
        )
        return self._abandoned(released)

    async def _abandoned(self, released: asyncio.Future[_Ended]) -> None:
        placed, value = await released
        deadline = time.monotonic() + CLEAR_WAIT  # as _release()'s: RELEASE has just gone
        if not placed:
            if not isinstance(value, TelecardError):
                raise value
            # not placed, or the card went: nothing left up here
            log.debug("%s: abandoned call: %s", self.sync._name(), value)
            return
        await self._ended(value, deadline)

    async def wait_for_incoming_call(self, seconds_timeout: float | None = None) -> _State:
        """`CallChannel.wait_for_incoming_call()`: CALL_INCOMING (or the state the call
        reached), IDLE on timeout. A call handed over just as the wait is cancelled goes to
        `AsyncCard.wait_for_incoming_call()`'s queue instead."""
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        channel = self.sync
        handed = channel._start_waiting()
        try:
            await self._until(lambda: channel._handed_to(handed), timeout)
        except asyncio.CancelledError:
            with channel._lock:
                call_id = channel._call_id
                orphan = (
                    channel._waiters == 1
                    and channel._handed_to(handed)
                    and channel._holds_call(call_id)
                )
            if orphan:
                self._card.sync.offer_incoming(channel, call_id)
            raise
        finally:
            state = channel._stop_waiting()
        return state

    async def ring(self, seconds_ringtime: float = 0) -> _State:
        """`CallChannel.ring()`: ALERTING, then wait up to `seconds_ringtime` seconds."""
        ringtime = check_timeout(seconds_ringtime, "seconds_ringtime")
        channel = self.sync
        call_id = await self._card._run(channel._alert)
        await self._until(lambda: channel._alerted(call_id), ANSWER_WAIT)
        if ringtime:
            await self._until(lambda: channel._rung(call_id), wait_time(ringtime))
        return channel._state_of(call_id)

    async def answer(self) -> _State:
        """`CallChannel.answer()`: ANSWERED, or IDLE/ERROR when the call ended first."""
        channel = self.sync
        call_id = await self._card._run(channel._answer)
        await self._until(lambda: channel._settled(call_id), ANSWER_WAIT)
        return channel._state_of(call_id)

    async def reject(self, cause: _Cause | None = None, raw_cause: int | None = None) -> _State:
        """`CallChannel.reject()`: refuse an incoming call (default cause REJECTED)."""
        value = reject_value(cause, raw_cause)
        call_id = self.sync._rejectable()
        await self._clear(call_id, value)
        return self.sync._state_of(call_id)

    async def hang_up(self) -> _State:
        """`CallChannel.hang_up()`: clear with NORMAL (cause 16) and wait until IDLE.
        Cancelled, the clearing goes on without the task."""
        channel = self.sync

        def release() -> tuple[int, float] | None:
            # One job: the RELEASE is sent even if the task is cancelled before it gets the
            # call's id back.
            call_id = channel._to_hang_up()
            if call_id is None:
                return None
            return call_id, channel._release(call_id, q850.NORMAL_CALL_CLEARING)

        released = await self._card._run(release)
        if released is None:
            return self._state_now()
        call_id, deadline = released
        await self._ended(call_id, deadline)
        return channel._state_of(call_id)

    async def wait_for_idle(self, seconds_timeout: float | None = 60) -> _State:
        """`CallChannel.wait_for_idle()`: the state once the call has ended (or timed out)."""
        timeout = wait_time(check_timeout(seconds_timeout, "seconds_timeout"))
        await self._until(self.sync._idle, timeout)
        return self._state_now()

    async def _until(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        return await self._card._bridge.until(self.sync._cond, predicate, timeout)

    def _state_now(self) -> _State:
        with self.sync._lock:
            return self.sync._state

    async def _clear(self, call_id: int, value: int) -> None:
        """`CallChannel._clear()`: RELEASE on the pool, then await the call's end."""
        deadline = await self._card._run(self.sync._release, call_id, value)
        await self._ended(call_id, deadline)

    async def _ended(self, call_id: int, deadline: float) -> None:
        """The second half of `_clear()`: await the call's end until `deadline`."""
        channel = self.sync
        remaining = max(0.0, deadline - time.monotonic())
        if not await self._until(lambda: channel._gone(call_id), remaining):
            await self._card._run(channel._resync)
