"""telecard.aio on its own: cancellation, asyncio.timeout(), TaskGroup, many calls from one
loop, the card lost or closed under waiting tasks, events, and no blocking call on the loop.

Every test runs its coroutine with `run()`: the loop in debug mode with a slow-callback
threshold of 0.08 s, the test failing if any callback (a blocking call on the loop) took
longer. The test's own blocking checks (the network's view of a call) come after the loop.
"""

from __future__ import annotations

import _thread
import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest

import telecard
import telecard.aio
from firmware_sim import SimulatedCard
from firmware_sim.network import Answer, NoAnswer
from telecard import Cause, EventCode, State
from telecard.aio import AsyncCallChannel, AsyncCard
from telecard.device import CommandPool
from tests.aio_faces import SlowCallbacks

_T = TypeVar("_T")
SLOW = 0.08  # below the slow card's 0.1 s a request; above a busy machine's GIL waits (55 ms seen)


def run(main: Coroutine[Any, Any, _T]) -> _T:
    """asyncio.run(main) in debug mode; fails on a callback slower than SLOW."""
    slow = SlowCallbacks()
    logger = logging.getLogger("asyncio")
    logger.addHandler(slow)

    async def watched() -> _T:
        asyncio.get_running_loop().slow_callback_duration = SLOW
        return await main

    try:
        result = asyncio.run(watched(), debug=True)
    finally:
        logger.removeHandler(slow)
    assert slow.found == [], "a blocking call on the event loop"
    return result


async def off_loop(fn: Callable[..., _T], *args: object) -> _T:
    """`fn(*args)` on a thread of its own (asyncio.to_thread's pool starts its threads on the
    loop, waiting for each to run: a slow callback on a busy machine)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[_T] = loop.create_future()

    def call() -> None:
        try:
            result = fn(*args)
        except BaseException as exc:  # handed to the awaiting task
            loop.call_soon_threadsafe(done.set_exception, exc)
        else:
            loop.call_soon_threadsafe(done.set_result, result)

    _thread.start_new_thread(call, ())
    return await done


async def ringing(channel: AsyncCallChannel) -> None:
    """Until `channel` shows its outgoing call ringing at the far end."""
    async with asyncio.timeout(5):
        while channel.state() is not State.RING_OUTGOING:
            await asyncio.sleep(0.005)


async def own(card: AsyncCard) -> AsyncCallChannel:
    channel = await card.free_channel()
    assert channel is not None
    return channel


# -- no blocking call on the loop -----------------------------------------------------------


def test_a_slow_card_never_blocks_the_loop(sim: SimulatedCard) -> None:
    """Each request takes the card 0.1 s: a single one made on the loop would show as a
    callback slower than SLOW. Every request of the API is made meanwhile."""

    async def main() -> list[State]:
        async with telecard.aio.open(sim.device_path) as card:
            await off_loop(sim.faults.slow, 0.1, 1000)
            assert (await card.spans)[0].dchannel_up
            states = []
            async with card.free_channel() as channel:
                assert channel is not None
                states.append(await channel.call("3302"))
                states.append(await channel.hang_up())
                states.append(await channel.call("3303", seconds_timeout=0.2))
                placed = await channel.start_call("3303")
                assert placed in (State.CALL_OUTGOING, State.RING_OUTGOING)
                states.append(await channel.hang_up())
            for number in ("100", "101"):
                await off_loop(sim.network.place_call, number)
                incoming = await card.wait_for_incoming_call(10)
                assert incoming is not None
                states.append(await incoming.ring())
                if number == "100":
                    states.append(await incoming.answer())
                    await incoming.release()
                else:
                    states.append(await incoming.reject())
                    await incoming.release()
            reserved = card.channel(0, 20)
            await reserved.reserve()
            await reserved.release()
            await off_loop(sim.faults.slow, 0, 0)
            return states

    assert run(main()) == [
        State.ANSWERED, State.IDLE, State.IDLE, State.IDLE,
        State.RING_INCOMING, State.ANSWERED, State.RING_INCOMING, State.IDLE,
    ]


# -- cancellation --------------------------------------------------------------------------


def test_cancelled_call_is_cleared_with_16_and_the_channel_goes_on(sim: SimulatedCard) -> None:
    async def main() -> tuple[State, Cause, int | None, State, Cause]:
        async with telecard.aio.open(sim.device_path) as card:
            channel = await own(card)
            task = asyncio.create_task(channel.call("3303"))
            await ringing(channel)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            after = (channel.state(), channel.cause(), channel.details.raw_cause)
            again = await channel.call("3301")
            return (*after, again, channel.cause())

    assert run(main()) == (State.IDLE, Cause.NORMAL, 16, State.IDLE, Cause.BUSY)
    first = sim.network.received[0].wait(5)
    assert first.alerted and (first.cleared_by, first.cause) == ("card", 16)


@pytest.mark.parametrize("steps", [0, 1, 2, 5])
def test_cancelled_while_the_call_is_placed_leaves_nothing_up(
    sim: SimulatedCard, steps: int
) -> None:
    """Cancelled while MAKE_CALL is under way: the call it places is cleared all the same."""
    sim.network.route("5000", NoAnswer())

    async def main() -> tuple[State, int]:
        async with telecard.aio.open(sim.device_path) as card:
            channel = card.channel(0, 1)
            task = asyncio.create_task(channel.call("5000"))
            for _ in range(steps):
                await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            state = await channel.wait_for_idle(5)
            assert await channel.call("3301") is State.IDLE
            return state, len(sim.network.received)

    state, placed = run(main())
    assert state is State.IDLE
    for handle in sim.network.received[: placed - 1]:
        result = handle.wait(5)
        assert (result.cleared_by, result.cause) == ("card", 16)


def test_asyncio_timeout_abandons_the_call_with_16(sim: SimulatedCard) -> None:
    async def main() -> tuple[float, State, Cause, int | None]:
        async with telecard.aio.open(sim.device_path) as card:
            channel = await own(card)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await channel.call("3303", seconds_timeout=10)
            took = loop.time() - started
            return took, channel.state(), channel.cause(), channel.details.raw_cause

    took, state, cause, raw = run(main())
    assert 0.3 <= took < 3
    assert (state, cause, raw) == (State.IDLE, Cause.NORMAL, 16)
    assert (sim.network.received[0].wait(5).cleared_by, sim.network.received[0].result.cause) == (
        "card", 16)


def test_taskgroup_failure_clears_every_sibling_call(sim: SimulatedCard) -> None:
    async def main() -> list[tuple[State, int | None]]:
        async with telecard.aio.open(sim.device_path) as card:
            channels = [card.channel(0, n) for n in (1, 2, 3)]

            async def fail_once_ringing() -> None:
                for channel in channels:
                    await ringing(channel)
                raise RuntimeError("application error")

            with pytest.raises(ExceptionGroup) as raised:
                async with asyncio.TaskGroup() as group:
                    for channel in channels:
                        group.create_task(channel.call("3303"))
                    group.create_task(fail_once_ringing())
            assert raised.group_contains(RuntimeError)
            return [(c.state(), c.details.raw_cause) for c in channels]

    assert run(main()) == [(State.IDLE, 16)] * 3
    results = [h.wait(5) for h in sim.network.received]
    assert [(r.cleared_by, r.cause) for r in results] == [("card", 16)] * 3


def test_cancelled_incoming_wait_loses_no_call(sim: SimulatedCard) -> None:
    async def main() -> tuple[State, State]:
        async with telecard.aio.open(sim.device_path) as card:
            waiter = asyncio.create_task(card.wait_for_incoming_call())
            watcher = asyncio.create_task(card.channel(0, 5).wait_for_incoming_call())
            await asyncio.sleep(0.05)
            waiter.cancel()
            watcher.cancel()
            for task in (waiter, watcher):
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert card.channel(0, 5).state() is State.IDLE  # no longer WAITING
            await off_loop(sim.network.place_call, "100")
            channel = await card.wait_for_incoming_call(5)
            assert channel is not None and channel.owned
            return channel.state(), await channel.answer()

    assert run(main()) == (State.CALL_INCOMING, State.ANSWERED)


# -- many calls, one loop ------------------------------------------------------------------


@pytest.mark.telecard_sim(spans=7)
def test_200_concurrent_calls_from_one_loop_each_get_their_outcome(sim_card: Any) -> None:
    expected = {
        "3301": (State.IDLE, Cause.BUSY, 17),
        "3302": (State.ANSWERED, Cause.NORMAL, None),
        "3304": (State.IDLE, Cause.CONGESTION, 42),
        "3309": (State.IDLE, Cause.UNOBTAINABLE, 1),
    }
    numbers = list(expected)

    async def main() -> tuple[list[str], int]:
        wrong = []
        async with telecard.aio.open(sim_card.device_path) as card:
            async with asyncio.timeout(10):
                while not all(s.dchannel_up for s in await card.spans):
                    await asyncio.sleep(0.01)
            channels = card.channels()[:200]

            async def one(i: int, channel: AsyncCallChannel) -> None:
                number = numbers[i % len(numbers)]
                state = await channel.call(number, seconds_timeout=20)
                got = (state, channel.cause(), channel.details.raw_cause)
                if state is State.ANSWERED and await channel.hang_up() is not State.IDLE:
                    wrong.append(f"{channel!r}: hang_up()")
                if got != expected[number]:
                    wrong.append(f"{channel!r} {number}: {got}")

            async with asyncio.TaskGroup() as group:
                for i, channel in enumerate(channels):
                    group.create_task(one(i, channel))
                    await asyncio.sleep(0)  # in debug mode a task costs 0.1 ms to create
            return wrong, card.statistics().total.total.attempts

    assert run(main()) == ([], 200)


# -- the card lost, or closed, under waiting tasks ------------------------------------------


def test_card_lost_while_tasks_wait(sim: SimulatedCard) -> None:
    """The tasks get what threads get: call() returns ERROR, the incoming-call wait raises
    DeviceLostError, events end, new requests raise DeviceLostError."""

    async def main() -> None:
        async with telecard.aio.open(sim.device_path) as card:
            channels = [card.channel(0, n) for n in (1, 2)]
            calls = [asyncio.create_task(c.call("3303", seconds_timeout=30)) for c in channels]
            incoming = asyncio.create_task(card.wait_for_incoming_call(30))
            idle = asyncio.create_task(card.channel(0, 9).wait_for_incoming_call(30))
            events = card.events()
            for channel in channels:
                await ringing(channel)
            await off_loop(sim.faults.vanish)
            async with asyncio.timeout(10):  # a waiter left unwoken fails, it does not hang
                assert await asyncio.gather(*calls) == [State.ERROR, State.ERROR]
                with pytest.raises(telecard.DeviceLostError):
                    await incoming
                assert await idle is State.ERROR
                codes = [e.code async for e in events]  # it ends
            assert EventCode.STATE in codes and codes[-1] is telecard.HostEventCode.LOST
            assert card.lost
            assert all(c.cause() is Cause.ERROR and c.details.raw_cause is None for c in channels)
            with pytest.raises(telecard.DeviceLostError):
                await card.channel(0, 3).call("3301")
            with pytest.raises(telecard.DeviceLostError):
                await card.free_channel()

    run(main())


def test_closing_clears_calls_and_ends_the_waits(sim: SimulatedCard) -> None:
    async def main() -> list[tuple[State, str, int | None]]:
        card = await telecard.aio.open(sim.device_path)
        outgoing = await own(card)
        assert await outgoing.call("3302") is State.ANSWERED
        await off_loop(sim.network.place_call, "100")
        incoming = await card.wait_for_incoming_call(5)
        assert incoming is not None and await incoming.answer() is State.ANSWERED
        waits = [asyncio.create_task(c.wait_for_idle(30)) for c in (outgoing, incoming)]
        await card.close()
        states = await asyncio.gather(*waits)
        with pytest.raises(telecard.DeviceLostError):
            await outgoing.call("3301")
        await outgoing.release()  # safe on a closed card, as CallChannel.release()
        pairs = zip(states, (outgoing, incoming), strict=True)
        return [(s, c.details.cause_source, c.details.raw_cause) for s, c in pairs]

    # Cleared by close() (IDLE), or ERROR if the card was closed before the wait looked.
    for state, source, raw in run(main()):
        assert state in (State.IDLE, State.ERROR) and (source, raw) == ("local", 16)
    assert [(r.cleared_by, r.cause) for r in (h.wait(5) for h in sim.network.received)] == [
        ("card", 16)]


# -- events, ownership ---------------------------------------------------------------------


def test_async_events_are_the_typed_events(sim: SimulatedCard) -> None:
    async def main() -> list[telecard.Event]:
        async with telecard.aio.open(sim.device_path) as card:
            async with card.events(timeout=5) as events:
                assert await card.channel(0, 4).call("3301") is State.IDLE
                got = []
                async for event in events:
                    got.append(event)
                    if event.code is EventCode.CLEARED and event.channel == 4:
                        break
                assert await events.get(0.05) is None
                return got

    got = run(main())
    assert all(isinstance(e, telecard.Event) for e in got)
    assert EventCode.STATE in [e.code for e in got if (e.span, e.channel) == (0, 4)]
    assert (got[-1].cause, got[-1].raw_cause) == (Cause.BUSY, 17)


def test_async_events_end_when_the_card_closes(sim: SimulatedCard) -> None:
    async def main() -> list[telecard.Event]:
        card = await telecard.aio.open(sim.device_path)
        reader = asyncio.create_task(_collect(card.events()))
        assert await card.channel(0, 1).call("3301") is State.IDLE
        await card.close()
        return await asyncio.wait_for(reader, 5)

    assert EventCode.CLEARED in [e.code for e in run(main())]


async def _collect(events: telecard.aio.AsyncEvents) -> list[telecard.Event]:
    return [event async for event in events]


def test_free_channel_as_async_with_and_await(sim: SimulatedCard) -> None:
    async def main() -> None:
        async with telecard.aio.open(sim.device_path) as card:
            async with card.free_channel() as first:
                assert first is not None and first.owned and first.number == 1
                second = await card.free_channel()
                assert second is not None and second.number == 2
                assert await first.call("3302") is State.ANSWERED
            assert not first.owned and first.state() is State.IDLE
            await second.release()
            taken = [await card.free_channel() for _ in range(31)]
            assert taken[-1] is None and None not in taken[:30]
            with pytest.raises(ValueError):
                card.free_channel(span=1)

    run(main())
    assert (sim.network.received[0].wait(5).cleared_by, sim.network.received[0].result.cause) == (
        "card", 16)


def test_incoming_call_through_the_async_channel_face(sim: SimulatedCard) -> None:
    sim.network.route("5001", Answer(after=0.05, hold=0.1))

    async def main() -> list[State]:
        async with telecard.aio.open(sim.device_path) as card:
            channel = card.channel(0, 3)
            waiting = asyncio.create_task(channel.wait_for_incoming_call(5))
            async with asyncio.timeout(5):
                while channel.state() is not State.WAITING:
                    await asyncio.sleep(0.005)
            await off_loop(lambda: sim.network.place_call("100", timeslot=3))
            states = [await waiting, await channel.ring(), await channel.answer()]
            states.append(await channel.hang_up())
            assert await card.wait_for_incoming_call(0.1) is None  # handed to the waiter only
            return states

    assert run(main()) == [State.CALL_INCOMING, State.RING_INCOMING, State.ANSWERED, State.IDLE]


def test_open_checks_its_arguments(sim: SimulatedCard) -> None:
    for workers in (0, 1.5, True):
        with pytest.raises(ValueError):
            telecard.aio.open(sim.device_path, workers=workers)  # type: ignore[arg-type]

    async def main() -> None:
        with pytest.raises(ValueError):
            await telecard.aio.open(sim.device_path, watchdog=0.01)
        async with telecard.aio.open(sim.device_path, workers=1) as card:
            with pytest.raises(ValueError):
                await card.channel(0, 1).call("not digits")
            assert await card.channel(0, 1).call("3301") is State.IDLE

    run(main())


def test_release_while_the_card_closes_does_not_block_the_loop(sim: SimulatedCard) -> None:
    """A channel released while close() is under way (its call not cleared yet): the release
    is close()'s to do; nothing of it runs on the loop (each request takes the card 0.1 s)."""

    async def main() -> State:
        card = await telecard.aio.open(sim.device_path)
        channel = await own(card)
        assert await channel.call("3302") is State.ANSWERED
        await off_loop(sim.faults.slow, 0.1, 1000)
        closing = asyncio.create_task(card.close())
        await asyncio.sleep(0)
        await channel.release()
        await closing
        await off_loop(sim.faults.slow, 0, 0)
        assert not channel.owned
        return channel.state()

    assert run(main()) is State.ERROR
    assert (sim.network.received[0].wait(5).cleared_by, sim.network.received[0].result.cause) == (
        "card", 16)


def test_another_loop_or_thread_is_refused_before_anything_reaches_the_card(
    sim: SimulatedCard,
) -> None:
    """An AsyncCard belongs to the loop it was opened on: a request from another loop, or
    from a thread without one, raises RuntimeError and sends nothing (with one command thread,
    a command it had queued would have run before `spans`)."""

    async def main() -> State:
        async with telecard.aio.open(sim.device_path, workers=1) as card:
            channel = card.channel(0, 1)

            def elsewhere() -> None:
                with pytest.raises(RuntimeError, match="loop"):
                    asyncio.run(channel.call("3302"))
                with pytest.raises(RuntimeError, match="loop"):
                    asyncio.run(card.close())
                with pytest.raises(RuntimeError, match="loop"):
                    channel.start_call("3302").send(None)

            # Not off_loop(): asyncio.run() asks threading which thread it is on, which
            # registers a thread started with _thread until its ident is reused.
            await asyncio.to_thread(elsewhere)
            await card.spans
            return channel.state()

    assert run(main()) is State.IDLE
    assert sim.network.received == []


def test_close_after_a_cancelled_close_waits_for_the_card_to_close(sim: SimulatedCard) -> None:
    """close() cancelled goes on without its task (as a cancelled call()'s clearing does);
    close() again returns once the card is closed, every call cleared (each request takes the
    card 0.1 s meanwhile)."""

    async def main() -> tuple[State, bool]:
        card = await telecard.aio.open(sim.device_path)
        channel = await own(card)
        assert await channel.call("3302") is State.ANSWERED
        await off_loop(sim.faults.slow, 0.1, 1000)
        closing = asyncio.create_task(card.close())
        await asyncio.sleep(0.05)
        closing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await closing
        await card.close()
        after = channel.state(), card.sync.lost or card.sync._closed
        await off_loop(sim.faults.slow, 0, 0)
        return after

    assert run(main()) == (State.ERROR, True)
    assert (sim.network.received[0].wait(5).cleared_by, sim.network.received[0].result.cause) == (
        "card", 16)


def test_cancelled_reserve_leaves_the_channel_free(sim: SimulatedCard) -> None:
    """reserve() cancelled while RESERVE is under way: the reservation it makes is given back
    (as free_channel()'s), not left to keep the channel from every caller."""

    async def main() -> tuple[bool, bool, State]:
        async with telecard.aio.open(sim.device_path, workers=1) as card:
            channel = card.channel(0, 6)
            await off_loop(sim.faults.slow, 0.1, 1000)
            task = asyncio.create_task(channel.reserve())
            await asyncio.sleep(0.02)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await card.spans  # after anything the cancelled task left queued (one thread)
            await off_loop(sim.faults.slow, 0, 0)
            block = await off_loop(card.sync.device.read_channel, 0, 6)
            await channel.reserve()  # free again
            state = await channel.call("3301")
            await channel.release()
            return channel.owned, block.owned, state

    assert run(main()) == (False, False, State.IDLE)


def test_cancelled_hang_up_still_clears_the_call(sim: SimulatedCard) -> None:
    """hang_up() cancelled before its command thread got to it (the one thread busy with a
    slow request): the call is cleared all the same, as when cancelled a moment later."""

    async def main() -> tuple[State, int | None]:
        async with telecard.aio.open(sim.device_path, workers=1) as card:
            channel = await own(card)
            assert await channel.call("3302") is State.ANSWERED
            await off_loop(sim.faults.slow, 0.1, 1)
            busy = asyncio.ensure_future(card.spans)  # holds the one command thread
            await asyncio.sleep(0.01)
            task = asyncio.create_task(channel.hang_up())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await busy
            return await channel.wait_for_idle(2), channel.details.raw_cause

    assert run(main()) == (State.IDLE, 16)
    assert (sim.network.received[0].wait(5).cleared_by, sim.network.received[0].result.cause) == (
        "card", 16)


def test_open_takes_card_opens_arguments_and_overlap_receiving_is_set_through_it(
    sim: SimulatedCard,
) -> None:
    """aio.open passes `bearers` on as Card.open does (the card refuses a 3.1 kHz call it was
    not told to take), and set_overlap_digits() sets the span's rule."""

    async def main() -> tuple[int, int, str]:
        bearers = iter([telecard.Bearer.SPEECH])  # one-shot, as an application may pass
        async with telecard.aio.open(sim.device_path, bearers=bearers) as card:
            await card.set_overlap_digits(0, 6)
            rule = await off_loop(card.sync.device.read, telecard.device.lib.TC_SPAN_BASE
                                  + telecard.device.lib.TC_SPAN_OVERLAP_DIGITS, 1)
            accepted = await off_loop(card.sync.device.read,
                                      telecard.device.lib.TC_REG_ACCEPT_BEARERS, 4)
            handle = await off_loop(functools.partial(
                sim.network.place_call, "123456", overlap=2, sending_complete=False, timeslot=5))
            channel = await card.wait_for_incoming_call(5)
            assert channel is not None
            number = channel.details.call_to
            await channel.reject()
            await off_loop(handle.wait, 5)
            return rule[0], int.from_bytes(accepted, "little"), number

    assert run(main()) == (6, 1 << telecard.Bearer.SPEECH, "123456")


def test_a_job_raising_stopiteration_fails_its_awaiter_and_not_the_batch(
    sim: SimulatedCard,
) -> None:
    """A future refuses StopIteration: the job's awaiter gets a RuntimeError from it, and
    the news posted beside it (another job's result) still reaches its task."""

    def stop() -> None:
        raise StopIteration("from a job")

    async def main() -> tuple[str, object, int]:
        async with telecard.aio.open(sim.device_path, workers=1) as card:
            bridge = card._bridge
            failing = bridge.submit(stop)
            following = bridge.submit(lambda: 7)  # posted right after, often in one batch
            async with asyncio.timeout(5):  # not forever, if the failure is lost
                with pytest.raises(RuntimeError) as failed:
                    await failing.future
                return str(failed.value), failed.value.__cause__, await following.future

    message, cause, value = run(main())
    assert "StopIteration" in message and isinstance(cause, StopIteration)
    assert value == 7


def test_a_failing_posted_callback_does_not_hold_back_the_rest(sim: SimulatedCard) -> None:
    """A posted callback that raises goes to the loop's exception handler; the callbacks
    posted with it in the same batch still run."""

    def boom() -> None:
        raise ValueError("posted callback")

    async def main() -> tuple[list[str], int]:
        loop = asyncio.get_running_loop()
        seen: list[str] = []
        loop.set_exception_handler(lambda _, context: seen.append(str(context["exception"])))
        async with telecard.aio.open(sim.device_path) as card:
            bridge = card._bridge
            after: asyncio.Future[int] = loop.create_future()
            # Posted from the loop, both wait in one batch for its next step. (_succeed: `after`
            # may be cancelled by the time-out, the second callback must not fail then too.)
            bridge.post(boom)
            bridge.post(telecard.aio._succeed, after, 3)
            async with asyncio.timeout(5):
                value = await after
            return seen, value

    assert run(main()) == (["posted callback"], 3)


def until(condition: Callable[[], bool], seconds: float = 5) -> bool:
    """Poll `condition` (host-side state, no I/O) until it holds or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


@pytest.mark.parametrize("undo", ["call", "reserve"])
def test_what_a_cancelled_task_leaves_is_undone_even_if_the_loop_stops(
    sim: SimulatedCard, undo: str
) -> None:
    """The loop stops (asyncio.run returns, cancelling the clean-up too) while a cancelled
    task's MAKE_CALL or RESERVE is still on its way: the worker that ran it undoes it (the
    call cleared with 16, the reservation ended), with no loop left to ask."""
    sim.network.route("5000", NoAnswer())
    opened: list[AsyncCard] = []
    seq: list[int] = []

    async def main() -> None:
        card = await telecard.aio.open(sim.device_path, workers=1)
        opened.append(card)
        channel = card.channel(0, 1)
        seq.append((await off_loop(card.sync.device.read_channel, 0, 1)).seq)
        await off_loop(sim.faults.slow, 0.1, 1000)  # each request takes 0.1 s
        task = asyncio.create_task(
            channel.call("5000") if undo == "call" else channel.reserve()
        )
        await asyncio.sleep(0.02)
        task.cancel()  # and the loop ends at once, the clean-up task with it

    asyncio.run(main())
    card = opened[0].sync
    channel = card.channel(0, 1)
    try:
        if undo == "call":
            assert until(lambda: bool(sim.network.received))  # placed, for nobody
            result = sim.network.received[0].wait(5)
            assert (result.cleared_by, result.cause) == ("card", 16)
            assert channel.wait_for_idle(5) is State.IDLE
        else:
            def given_back() -> bool:  # RESERVE, then UNRESERVE, on the card
                block = card.device.read_channel(0, 1)
                return block.seq == seq[0] + 2 and not block.owned

            assert until(given_back)
            assert not channel.owned
    finally:
        sim.faults.slow(0, 0)
        card.close()


def test_a_cancelled_command_that_then_fails_does_not_hang_its_task(sim: SimulatedCard) -> None:
    """Cancelled while its job waits for the one worker, the job then failing (the channel
    already owned): there is nothing to undo, and the cancelled task ends (review finding:
    it waited for an undo that never came)."""

    async def main() -> str:
        async with telecard.aio.open(sim.device_path, workers=1) as card:
            channel = card.channel(0, 3)
            await channel.reserve()
            await off_loop(sim.faults.slow, 0.1, 1)
            busy = asyncio.ensure_future(card.spans)  # holds the one worker for 0.1 s
            await asyncio.sleep(0.02)
            task = asyncio.create_task(channel.reserve())
            await asyncio.sleep(0.01)
            task.cancel()  # its job still queued: the undo is arranged on it
            await busy
            done, _ = await asyncio.wait([task], timeout=3)
            if not done:
                task.cancel()  # a second cancel lets the task go
                await asyncio.wait([task], timeout=1)
            await channel.release()
            return "ended" if done and task.cancelled() else "hung"

    assert run(main()) == "ended"


def test_calls_are_placed_by_the_drivers_pool_and_wait_for_a_busy_channel_on_a_worker(
    sim: SimulatedCard,
) -> None:
    """MAKE_CALL goes to the driver's own threads: calls start no worker thread. A call
    placed while another command holds the channel waits for it on a worker (never on the
    loop), and goes out once that command is done."""

    async def main() -> tuple[list[State], int, State]:
        async with telecard.aio.open(sim.device_path, workers=4) as card:
            channels = [card.channel(0, n) for n in (1, 2, 3)]
            opened_with = card._bridge._threads  # the thread that opened the card
            states = list(await asyncio.gather(*(c.call("3302") for c in channels)))
            started = card._bridge._threads - opened_with
            for channel in channels:
                await channel.hang_up()
            holder = channels[0].sync._command_lock
            holder.acquire()
            try:
                task = asyncio.create_task(channels[0].call("3302"))
                await asyncio.sleep(0.1)
                assert not task.done()
            finally:
                holder.release()
            state = await asyncio.wait_for(task, 5)
            await channels[0].hang_up()
            return states, started, state

    states, started, state = run(main())
    assert states == [State.ANSWERED] * 3
    assert started == 0  # three calls at once: with workers, three threads
    # The lock is held on the loop's own thread: had the call waited for it there, the loop
    # would have stopped for good.
    assert state is State.ANSWERED


def test_a_card_opened_and_closed_leaves_no_thread_behind(
    sim: SimulatedCard, caplog: pytest.LogCaptureFixture
) -> None:
    """Every thread an AsyncCard starts (its workers, the driver's command pool, the reaper,
    the closing thread) ends with close(), and none stays registered with threading, though
    they log (which asks threading which thread it is on): a server that opens and closes
    cards for days holds no more threads than at the start."""
    caplog.set_level(logging.DEBUG, logger="telecard")

    # A thread started with _thread that asked threading who it is stays registered until its
    # ident is reused, which this test's threads may do: not counted.
    foreign = {t for t in threading.enumerate() if isinstance(t, threading._DummyThread)}

    def counts() -> tuple[int, int]:
        registered = sum(1 for t in threading.enumerate() if t not in foreign)
        return len(os.listdir(f"/proc/{os.getpid()}/task")), registered

    async def cycle() -> None:
        async with telecard.aio.open(sim.device_path) as card:
            channels = card.channels()[:4]
            await asyncio.gather(*(c.call("3302") for c in channels))
            await asyncio.gather(*(c.hang_up() for c in channels))

    before = counts()
    for _ in range(6):
        run(cycle())
    deadline = time.monotonic() + 5
    while counts() != before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counts() == before


def test_close_clears_a_call_whose_make_call_is_still_out(sim: SimulatedCard) -> None:
    """The card closed while a call's MAKE_CALL is on its way (the card slow to take it), on
    a channel nobody reserved: the call the card places is cleared by the close (cause 16),
    not left up with the watchdog turned off (review finding: the close saw no call and no
    reservation on the channel)."""
    sim.network.route("5000", NoAnswer())

    async def main() -> None:
        card = await telecard.aio.open(sim.device_path, watchdog=2.0)
        channel = card.channel(0, 1)
        await off_loop(sim.faults.stall, 0.1)
        task = asyncio.create_task(channel.call("5000"))
        await asyncio.sleep(0.02)
        await card.close()
        await asyncio.wait([task], timeout=5)

    for _ in range(4):
        count = len(sim.network.received)
        asyncio.run(main())  # not in debug mode, which slows the loop past the race
        assert len(sim.network.received) == count + 1
        result = sim.network.received[-1].wait(1.5)  # before the watchdog's 2 s
        assert (result.cleared_by, result.cause) == ("card", 16)


def test_a_call_goes_to_the_workers_when_the_pool_is_full(
    sim: SimulatedCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The driver's pool full (its submit() says so), the call runs on a worker thread; the
    pool's submit() failing, the channel is left as it was (the command lock free)."""
    monkeypatch.setattr(CommandPool, "submit", lambda *args, **kwargs: False)

    async def full() -> State:
        async with telecard.aio.open(sim.device_path) as card:
            channel = card.channel(0, 1)
            state = await channel.call("3302")
            await channel.hang_up()
            return state

    assert run(full()) is State.ANSWERED

    def refuse(*args: object, **kwargs: object) -> bool:
        raise ValueError("refused")

    monkeypatch.setattr(CommandPool, "submit", refuse)

    async def failing() -> tuple[bool, State]:
        async with telecard.aio.open(sim.device_path) as card:
            channel = card.channel(0, 1)
            with pytest.raises(ValueError, match="refused"):
                await channel.call("3302")
            return channel.sync._command_lock.locked(), channel.state()

    assert run(failing()) == (False, State.IDLE)


def test_with_no_thread_to_be_had_the_reaper_finishes_and_undoes_itself(
    sim: SimulatedCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread can be started (RuntimeError, as when a process runs out of them): the
    reaper finishes a MAKE_CALL the link failed, and undoes a cancelled task's call, on its
    own thread, and goes on reaping (review finding: it died, and every later call hung with
    its channel's command lock held)."""
    sim.network.route("5000", NoAnswer())

    def no_thread(fn: Callable[..., object], *args: object) -> None:
        raise RuntimeError("can't start new thread")

    async def main() -> tuple[State, State, State]:
        async with telecard.aio.open(sim.device_path, timeout=0.2, retries=0) as card:
            warm = card.channel(0, 2)  # the card's first call: frames the drop would hit
            await warm.call("3302")
            await warm.hang_up()
            with monkeypatch.context() as patched:
                patched.setattr(telecard.aio, "_apart", no_thread)
                channel = card.channel(0, 1)
                await off_loop(sim.faults.drop, 1)  # MAKE_CALL's response lost
                failed_on_link = await asyncio.wait_for(channel.call("3302"), 5)
                await asyncio.wait_for(channel.hang_up(), 5)
                await off_loop(sim.faults.slow, 0.1, 1)
                task = asyncio.create_task(channel.call("5000"))
                await asyncio.sleep(0.02)
                task.cancel()  # abandoned while MAKE_CALL is out: the undo clears it
                await asyncio.wait([task], timeout=5)
                assert task.cancelled()
                after = await asyncio.wait_for(card.channel(0, 3).call("3302"), 5)
            return failed_on_link, channel.state(), after

    assert run(main()) == (State.ANSWERED, State.IDLE, State.ANSWERED)
    abandoned = sim.network.received[2].wait(5)
    assert (abandoned.cleared_by, abandoned.cause) == ("card", 16)
