"""Typed events (listeners, their removal, `Card.events()` readers) and the `telecard` loggers
(issue 9, parts 2 and 3)."""

from __future__ import annotations

import gc
import json
import logging
import subprocess
import sys
import threading
import time

import pytest

import telecard
import telecard.pump
from firmware_sim import SimulatedCard
from firmware_sim.network import NoAnswer
from telecard import (
    Card,
    CardState,
    Cause,
    Event,
    EventCode,
    HostEventCode,
    MailboxStatus,
    State,
)
from telecard import device as low
from telecard.events import typed_event
from tests.conftest import ROOT, subprocess_env, wait_for

# -- typed events ---------------------------------------------------------------------------


def test_a_busy_call_reports_typed_events_with_the_decoded_cause(tc: Card) -> None:
    seen: list[Event] = []
    tc.add_event_listener(seen.append)
    channel = tc.channel(0, 1)
    assert channel.call("3301") is State.IDLE
    wait_for(lambda: any(e.code is EventCode.CLEARED for e in seen))
    mine = [e for e in seen if (e.span, e.channel) == (0, 1)]
    assert all(isinstance(e.code, EventCode) for e in mine)
    states = [e for e in mine if e.code is EventCode.STATE]
    assert states and all(isinstance(e.card_state, CardState) for e in states)
    assert all(e.cause is None and e.registers is None for e in states)
    (cleared,) = [e for e in mine if e.code is EventCode.CLEARED]
    assert cleared.card_state is CardState.IDLE
    assert (cleared.cause, cleared.raw_cause, cleared.cause_location) == (Cause.BUSY, 17, 4)
    assert cleared.raw_cause_name == "User busy"
    assert cleared.cause_location_name == "public network serving the remote user"
    assert cleared.registers is not None and cleared.registers.called == "3301"
    assert (cleared.raw_cause, cleared.cause) == (channel.details.raw_cause, channel.cause())
    assert cleared.timestamp <= time.time()
    with pytest.raises(AttributeError):
        cleared.cause = Cause.NORMAL  # type: ignore[misc]


def test_typed_events_of_the_card_and_its_spans() -> None:
    reset = typed_event(low.Event(0xFF, 0xFF, EventCode.RESET, 0, 7), None)
    assert reset is not None and (reset.span, reset.channel, reset.seq) == (None, None, 7)
    span = typed_event(low.Event(1, 0, EventCode.SPAN, telecard._cdriver.lib.TC_DCHAN_UP, 3), None)
    assert span is not None and (span.span, span.channel, span.dchannel_up) == (1, None, True)
    done = typed_event(low.Event(0, 4, EventCode.COMMAND_DONE, MailboxStatus.DONE, 9), None)
    assert done is not None and done.status is MailboxStatus.DONE and done.card_state is None
    odd_state = typed_event(low.Event(0, 4, EventCode.STATE, 0xEE, 9), None)
    assert odd_state is not None and odd_state.card_state is None and odd_state.arg == 0xEE
    assert typed_event(low.Event(0, 4, 0x77, 0, 9), None) is None  # not in the datasheet


def test_a_cleared_event_read_too_late_carries_no_cause(sim: SimulatedCard, tc: Card) -> None:
    """Registers read for a CLEARED event after a later call began are not the event's."""
    sim.network.route("4000", NoAnswer())
    channel = tc.channel(0, 1)
    channel.start_call("4000")
    wait_for(lambda: channel.state() is State.RING_OUTGOING)
    block = tc.device.read_channel(0, 1)  # a call up: not the registers of a clearing
    cleared = typed_event(low.Event(0, 1, EventCode.CLEARED, CardState.IDLE, block.seq), block)
    assert cleared is not None and cleared.cause is None and cleared.registers is None
    channel.hang_up()


def test_no_typed_event_is_built_without_a_listener(
    tc: Card, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hot path: with nobody listening the pump hands out nothing."""

    def refuse(*args: object) -> None:
        raise AssertionError("typed event built")

    monkeypatch.setattr(telecard.pump, "typed_event", refuse)
    channel = tc.channel(0, 1)
    for _ in range(3):
        assert channel.call("3301") is State.IDLE and channel.cause() is Cause.BUSY
    assert tc.stats.resyncs == 1  # the one at open: no pump step failed


def test_a_removed_listener_is_not_called_again(tc: Card) -> None:
    first: list[Event] = []
    second: list[Event] = []
    tc.add_event_listener(first.append)
    tc.add_event_listener(second.append)
    tc.channel(0, 1).call("3301")
    wait_for(lambda: any(e.code is EventCode.CLEARED for e in second))
    tc.remove_event_listener(first.append)
    before = len(first)
    tc.channel(0, 1).call("3301")
    wait_for(lambda: sum(e.code is EventCode.CLEARED for e in second) == 2)
    assert len(first) == before
    with pytest.raises(ValueError, match="not an event listener"):
        tc.remove_event_listener(first.append)


def test_a_listener_removed_during_dispatch_is_not_called_for_that_event(tc: Card) -> None:
    """A listener removing a later one, and a listener removing itself, mid-dispatch."""
    calls: list[str] = []

    def remover(event: Event) -> None:
        calls.append("remover")
        tc.remove_event_listener(victim)
        tc.remove_event_listener(remover)

    def victim(event: Event) -> None:
        calls.append("victim")

    tc.add_event_listener(remover)
    tc.add_event_listener(victim)
    tc.channel(0, 1).call("3301")
    tc.channel(0, 1).call("3301")
    assert calls == ["remover"]


def test_removal_does_not_wait_for_a_listener_blocked_on_the_remover(tc: Card) -> None:
    """A listener waiting on a lock the removing thread holds: removal returns at once (it
    never waits for a call under way) and the pump goes on handing events out."""
    held = threading.Lock()
    inside = threading.Event()
    calls: list[Event] = []
    seen: list[Event] = []

    def blocked(event: Event) -> None:
        calls.append(event)
        inside.set()
        # Bounded, so that a pump that deadlocks fails the test rather than hang it.
        if held.acquire(timeout=3):
            held.release()

    tc.add_event_listener(blocked)
    tc.add_event_listener(seen.append)
    caller = threading.Thread(target=tc.channel(0, 1).call, args=("3301",))
    with held:
        caller.start()
        assert inside.wait(5)
        started = time.monotonic()
        tc.remove_event_listener(blocked)
        assert time.monotonic() - started < 1
    caller.join(10)
    removed = len(calls)
    assert tc.channel(0, 1).call("3301") is State.IDLE
    wait_for(lambda: sum(e.code is EventCode.CLEARED for e in seen) == 2)
    assert len(calls) == removed


def test_a_reader_iterates_events_until_its_timeout(tc: Card) -> None:
    with tc.events(timeout=0.5) as events:
        tc.channel(0, 1).call("3301")
        started = time.monotonic()
        got = list(events)
        assert time.monotonic() - started >= 0.5
    cleared = [e for e in got if e.code is EventCode.CLEARED]
    assert [e.cause for e in cleared] == [Cause.BUSY]
    assert events.dropped == 0
    assert events.get(0) is None  # closed by the end of the iteration: nothing more comes
    tc.channel(0, 1).call("3301")
    assert events.get(0.2) is None


def test_a_full_reader_drops_and_counts_without_holding_the_card_up(
    tc: Card, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="telecard")
    with tc.events(maxsize=2) as events:
        started = time.monotonic()
        for _ in range(5):
            assert tc.channel(0, 1).call("3301") is State.IDLE
        assert time.monotonic() - started < 5  # the pump never waited for the reader
        wait_for(lambda: events.dropped > 0)
        queued = [events.get(0), events.get(0)]
        assert all(e is not None for e in queued) and events.get(0) is None
    full = [r for r in caplog.records if "event reader full" in r.getMessage()]
    assert len(full) == 1 and full[0].name == "telecard.events"


@pytest.mark.parametrize("ending", ["closed", "lost"])
def test_a_reader_ends_when_the_card_closes_or_is_lost(sim: SimulatedCard, ending: str) -> None:
    card = Card.open(sim.device_path)
    waiting = card.events()
    results: list[Event] = []
    thread = threading.Thread(target=lambda: results.extend(iter(lambda: waiting.get(None), None)))
    thread.start()
    assert card.channel(0, 1).call("3301") is State.IDLE
    wait_for(lambda: any(e.code is EventCode.CLEARED for e in results))
    if ending == "closed":
        card.close()
    else:
        sim.faults.vanish()
        wait_for(lambda: card.lost)
    thread.join(5)
    assert not thread.is_alive()  # get(None) returned None: the reader ended
    assert [e.cause for e in results if e.code is EventCode.CLEARED] == [Cause.BUSY]
    started = time.monotonic()
    # A reader of a gone card has ended already: after LOST if the card was lost.
    late = [e.code for e in card.events(timeout=5)]
    assert late == ([] if ending == "closed" else [HostEventCode.LOST])
    assert time.monotonic() - started < 1
    with pytest.raises(ValueError, match="maxsize"):
        card.events(maxsize=0)
    card.close()


def _after_boot(codes: list[EventCode | HostEventCode]) -> list[EventCode | HostEventCode]:
    """`codes` without the card's boot news (RESET, then SPAN), which the event thread may
    still be handing out when Card.open() returns: a reader made at once gets them too."""
    while codes and codes[0] in (EventCode.RESET, EventCode.SPAN):
        codes = codes[1:]
    return codes


def test_a_readers_iteration_ends_when_the_device_is_lost(sim: SimulatedCard) -> None:
    with Card.open(sim.device_path) as card:
        events = card.events(timeout=5)
        sim.faults.vanish()
        started = time.monotonic()
        assert _after_boot([e.code for e in events]) == [HostEventCode.LOST]
        assert card.lost and time.monotonic() - started < 4  # ended, not timed out


def test_readers_and_listeners_added_after_the_loss_get_lost_then_end(sim: SimulatedCard) -> None:
    with Card.open(sim.device_path) as card:
        first = card.events(timeout=5)
        sim.faults.vanish()
        assert _after_boot([e.code for e in first]) == [HostEventCode.LOST]
        late = card.events(timeout=5)
        assert [e.code for e in late] == [HostEventCode.LOST]
        heard: list[Event] = []
        card.add_event_listener(heard.append)
        assert [e.code for e in heard] == [HostEventCode.LOST]


def test_readers_end_even_when_a_listener_raises_a_base_exception_at_lost(
    sim: SimulatedCard,
) -> None:
    """A listener's SystemExit (say) at LOST, which no event pump step catches, must not leave
    the readers to wait for ever: they are still told that no more events will come."""
    with Card.open(sim.device_path) as card:

        def exits(event: Event) -> None:
            if event.code is HostEventCode.LOST:
                raise SystemExit("the listener quits")

        card.add_event_listener(exits)
        events = card.events(timeout=10)
        sim.faults.vanish()
        started = time.monotonic()
        list(events)
        assert card.lost and time.monotonic() - started < 8  # ended, not timed out


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "call-waiting"])
def test_listeners_and_readers_get_lost_once_and_last(sim: SimulatedCard, busy: bool) -> None:
    """The card vanishes with nothing going on (the event thread finds it), or while a thread
    waits in call() (which may be draining itself when it finds it)."""
    sim.network.route("4000", NoAnswer())
    card = Card.open(sim.device_path)
    heard: list[tuple[Event, str]] = []
    card.add_event_listener(lambda e: heard.append((e, threading.current_thread().name)))
    reader = card.events()
    full = card.events(maxsize=1)  # LOST is queued even in a full reader
    channel = card.channel(0, 1)
    if busy:
        ended: list[State] = []
        caller = threading.Thread(target=lambda: ended.append(channel.call("4000")))
        caller.start()
        wait_for(lambda: channel.state() is State.RING_OUTGOING)
    else:
        assert channel.call("3301") is State.IDLE
    wait_for(lambda: full.dropped > 0)
    sim.faults.vanish()
    got = list(iter(lambda: reader.get(5), None))  # None: the reader ended (or timed out)
    assert got[-1].code is HostEventCode.LOST
    assert [e.code for e in got].count(HostEventCode.LOST) == 1
    lost = got[-1]
    assert (lost.span, lost.channel, lost.seq, lost.arg, lost.cause) == (None, None, 0, 0, None)
    assert str(lost.code) == "LOST" and lost.code not in set(EventCode)
    wait_for(lambda: any(e.code is HostEventCode.LOST for e, _ in heard))
    card.close()  # no second LOST from the close
    assert [e.code for e, _ in heard].count(HostEventCode.LOST) == 1
    assert heard[-1][0] is lost  # last, and the same event the reader got
    assert [e.code for e in iter(lambda: full.get(0), None)][-1] is HostEventCode.LOST
    if busy:
        caller.join(5)
        assert not caller.is_alive() and ended == [State.ERROR]


def test_lost_waits_for_the_thread_handing_out_events(sim: SimulatedCard) -> None:
    """LOST is handed out as any event is, by one thread at a time: found while another thread
    drains, it waits for that thread to finish."""
    card = Card.open(sim.device_path)
    heard: list[tuple[Event, str]] = []
    card.add_event_listener(lambda e: heard.append((e, threading.current_thread().name)))
    reader = card.events()
    while reader.get(0.2) is not None:  # the card's boot event, say
        pass
    heard.clear()
    with card._pump._draining:  # as a thread handing out events holds it
        sim.faults.vanish()
        wait_for(lambda: card.lost)
        assert reader.get(0.3) is None and not heard  # not while a hand-out may be under way
    (lost,) = [e for e in iter(lambda: reader.get(5), None)]
    assert lost.code is HostEventCode.LOST
    assert [(e, name.startswith("telecard lost")) for e, name in heard] == [(lost, True)]
    card.close()


def test_a_listener_may_close_the_card_at_lost_while_the_application_closes_it(
    sim: SimulatedCard,
) -> None:
    """Closing a lost card whose LOST is still to be handed out (a thread handing out events
    holds the pump) must not hand it out itself: a listener that closes the card at LOST
    would wait for the close under way on its own thread for ever."""
    card = Card.open(sim.device_path)
    heard: list[Event] = []

    def closes(event: Event) -> None:
        if event.code is HostEventCode.LOST:
            heard.append(event)
            card.close()

    card.add_event_listener(closes)
    holding, release = threading.Event(), threading.Event()

    def hand_out() -> None:
        with card._pump._draining:  # as a thread handing out events holds it
            holding.set()
            release.wait(10)

    handing_out = threading.Thread(target=hand_out)
    handing_out.start()
    assert holding.wait(5)
    sim.faults.vanish()
    wait_for(lambda: card.lost)
    closer = threading.Thread(target=card.close, daemon=True)
    closer.start()
    closer.join(5)
    release.set()
    handing_out.join(5)
    assert not closer.is_alive()
    wait_for(lambda: heard)
    assert [e.code for e in heard] == [HostEventCode.LOST]


def test_lost_is_not_handed_out_on_the_application_thread_that_found_it(
    sim: SimulatedCard,
) -> None:
    """An application thread that finds the device gone (a command, close()'s last re-read)
    may hold locks of its own, or the card's, that a LOST listener needs: LOST is handed out
    on a thread of the pump's."""
    card = Card.open(sim.device_path)
    mine = threading.Lock()
    got: list[bool] = []

    def needs_mine(event: Event) -> None:
        if event.code is HostEventCode.LOST:
            got.append(mine.acquire(timeout=3))
            if got[-1]:
                mine.release()

    card.add_event_listener(needs_mine)
    with card.events() as reader:
        while reader.get(0.2) is not None:  # the card's boot event, say: the pump is idle
            pass
    with mine:
        card._pump.device_lost()  # as when this thread's request finds the device gone
    wait_for(lambda: got)
    assert got == [True]
    card.close()


def test_a_closed_card_hands_out_no_lost_event(sim: SimulatedCard) -> None:
    card = Card.open(sim.device_path)
    heard: list[Event] = []
    card.add_event_listener(heard.append)
    reader = card.events()
    assert card.channel(0, 1).call("3301") is State.IDLE
    card.close()
    got = list(iter(lambda: reader.get(5), None))
    assert got and all(isinstance(e.code, EventCode) for e in got + heard)


def test_a_reader_whose_detaching_fails_still_ends(tc: Card) -> None:
    reader = tc.events()
    tc._pump.remove_listener(tc._pump._listeners[-1].callback)  # the card let it go
    waiter = threading.Thread(target=reader.get, args=(None,), daemon=True)
    waiter.start()
    with pytest.raises(ValueError, match="not an event listener"):
        reader.close()
    waiter.join(5)
    assert not waiter.is_alive()


def test_a_reader_dropped_unclosed_is_pruned(tc: Card) -> None:
    reader = tc.events()
    assert len(tc._pump._listeners) == 1
    del reader  # never closed
    gc.collect()
    tc.channel(0, 1).call("3301")
    wait_for(lambda: not tc._pump._listeners)


# -- logging ---------------------------------------------------------------------------------


def test_importing_telecard_configures_no_logging() -> None:
    code = """
import json, logging
root = logging.getLogger()
before = (list(root.handlers), root.level)
import telecard, telecard.cli
loggers = {
    name: [type(h).__name__ for h in logger.handlers]
    for name, logger in logging.Logger.manager.loggerDict.items()
    if isinstance(logger, logging.Logger) and logger.handlers
}
print(json.dumps({"root": (list(root.handlers), root.level) == before, "loggers": loggers,
                  "level": logging.getLogger("telecard").level}))
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(),
        cwd=ROOT, check=True,
    )  # fmt: skip
    seen = json.loads(result.stdout)
    assert seen == {"root": True, "loggers": {"telecard": ["NullHandler"]}, "level": 0}


def test_debug_traces_commands_state_changes_and_causes(
    tc: Card, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="telecard")
    tc.channel(0, 1).call("3301")
    debug = [(r.name, r.getMessage()) for r in caplog.records if r.levelno == logging.DEBUG]
    assert (
        "telecard.device",
        "span 0 channel 1: command MAKE_CALL (called 3301, calling -, cause -)",
    ) in debug
    assert ("telecard.channel", "span 0 channel 1: IDLE -> CALL_OUTGOING, outgoing call to 3301"
            " from -") in debug  # fmt: skip
    assert (
        "telecard.channel",
        "span 0 channel 1: cause 17 (User busy), location 4 (public network serving the remote"
        " user), sent by the network -> BUSY",
    ) in debug
    assert ("telecard.channel", "span 0 channel 1: CALL_OUTGOING -> IDLE, cause BUSY") in debug


def test_info_reports_the_spans_resets_and_adopted_calls(
    sim: SimulatedCard, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="telecard")
    sim.network.route("4000", NoAnswer())
    with Card.open(sim.device_path, keep_calls=True) as card:
        card.channel(0, 3).start_call("4000")
        wait_for(lambda: card.channel(0, 3).state() is State.RING_OUTGOING)
    with Card.open(sim.device_path) as card:
        assert card.channel(0, 3).state() is State.RING_OUTGOING
        sim.faults.reset()
        wait_for(lambda: card.channel(0, 3).state() is State.IDLE)
    info = [(r.name, r.getMessage()) for r in caplog.records if r.levelno == logging.INFO]
    assert ("telecard.card", "span 0: E1 TE, D-channel up") in info
    assert any(
        name == "telecard.card" and "closing, 1 call(s) left up" in text for name, text in info
    )
    assert (
        "telecard.channel",
        "span 0 channel 3: adopted an outgoing call to 4000 from -, RING_OUTGOING",
    ) in info
    assert any(name == "telecard.pump" and text.startswith("card reset") for name, text in info)
    assert not [r for r in caplog.records if r.levelno == logging.DEBUG]


def test_warning_when_a_command_is_tried_again(
    sim: SimulatedCard, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="telecard")
    with Card.open(sim.device_path, timeout=0.05, retries=0) as card:
        channel = card.channel(0, 1)
        sim.faults.stall(0.3)  # MAKE_CALL times out; the registers are read until it answers
        channel.call("3301")
        assert channel.cause() is Cause.BUSY
    warnings = [(r.name, r.getMessage()) for r in caplog.records if r.levelno == logging.WARNING]
    assert any(
        name == "telecard.channel" and text.startswith("span 0 channel 1:") and "again" in text
        for name, text in warnings
    ), warnings


@pytest.mark.parametrize(
    ("flags", "shown", "hidden"),
    [
        ([], [], ["INFO", "DEBUG"]),
        (["-v"], ["INFO telecard.card: span 0: E1 TE, D-channel up"], ["DEBUG"]),
        (["-vv"], ["DEBUG telecard.device: span 0 channel 1: command MAKE_CALL (called 3301",
                   "DEBUG telecard.channel: span 0 channel 1: cause 17 (User busy)"], []),
    ],
)  # fmt: skip
def test_cli_verbosity(flags: list[str], shown: list[str], hidden: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "telecard.cli", *flags, "call", "3301"],
        capture_output=True, text=True, env=subprocess_env(), timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 3, result.stderr
    for text in shown:
        assert text in result.stderr
    for level in hidden:
        assert f" {level} telecard." not in result.stderr
    assert "state:     IDLE" in result.stdout and "telecard." not in result.stdout
