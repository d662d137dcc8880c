"""Every call has one owner and exactly one outcome, and nothing is left up on the card.

Network emulator / libpri -> simulated card -> C driver -> telecard API, as in production.
"""

from __future__ import annotations

import itertools
import random
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from firmware_sim import SimulatedCard
from firmware_sim import regmap as rm
from firmware_sim.firmware import call_on_loop
from firmware_sim.network import Answer, RawCause, Reject
from telecard import (
    CallChannel,
    Card,
    CardState,
    Cause,
    Command,
    DeviceLostError,
    Event,
    EventCode,
    EventReader,
    InvalidStateError,
    LinkTimeoutError,
    State,
    TelecardError,
)
from tests.conftest import free, python, subprocess_env, wait_for
from tests.libpri_process import HAVE_LIBPRI, LibpriProcess, build

# number -> (Cause, raw cause) its caller must read, whatever other threads do meanwhile
OUTCOMES = {
    "3301": (Cause.BUSY, 17),
    "3304": (Cause.CONGESTION, 42),
    "9999": (Cause.UNOBTAINABLE, 1),
    "4021": (Cause.REJECTED, 21),
    "4034": (Cause.NOCHANNELS, 34),
    "4102": (Cause.TIMEOUT, 102),
}
GLARE = (State.IDLE, Cause.NOCHANNELS, 44)


# -- ownership ------------------------------------------------------------------------------


def test_no_channel_is_handed_out_twice(tc: Card) -> None:
    got = [tc.free_channel() for _ in range(31)]
    assert tuple(sorted(c.number for c in got[:30] if c)) == tc.spans[0].channels
    assert got[30] is None
    for channel in got[:30]:
        assert channel is not None
        channel.release()


def test_outcome_stays_with_its_owner_while_calls_arrive(sim: SimulatedCard, tc: Card) -> None:
    """The network's calls go to other channels (or are refused), never replacing the outcome
    an owner has yet to read."""
    with free(tc) as channel:
        assert channel.call("3301") is State.IDLE
        handle = sim.network.place_call("100", timeslot=channel.number)  # exclusive
        assert handle.wait(5).cause == 44
        for _ in range(3):
            sim.network.place_call("100")  # the network hunts for itself
        wait_for(lambda: sum(c.state() is State.CALL_INCOMING for c in tc.channels()) == 3)
        assert channel.state() is State.IDLE
        assert (channel.cause(), channel.details.raw_cause) == (Cause.BUSY, 17)


def test_readme_pattern_from_many_threads(sim: SimulatedCard) -> None:
    """The plain README pattern from 40 threads at once, with the network placing calls on
    the same card meanwhile: every caller reads its own call's outcome, every time. A call
    that meets the network's call on its channel (glare) reads NOCHANNELS / 44: its own."""
    sim.network.route("4021", Reject(21))
    sim.network.route("4034", Reject(34))
    sim.network.route("4102", Reject(102, stage="alerting"))
    sim.network.route("3305", Answer(hold=0.01))
    wrong: list[str] = []
    glare: list[str] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def caller(index: int) -> None:
        rng = random.Random(index)
        try:
            for _ in range(6):
                number = rng.choice([*OUTCOMES, "3305"])
                channel = card.free_channel()
                while channel is None:  # 30 channels, 40 callers and the network's calls
                    time.sleep(0.001)
                    channel = card.free_channel()
                with channel:
                    state = channel.call(number, seconds_timeout=10)
                    if (state, channel.cause(), channel.Details.raw_cause) == GLARE:
                        glare.append(number)
                        continue
                    if number == "3305":
                        if state is State.ANSWERED:
                            state = channel.wait_for_idle(10)
                        got = (state, channel.cause(), channel.Details.raw_cause)
                        if got != (State.IDLE, Cause.NORMAL, 16) or not channel.details.answered:
                            wrong.append(f"{number}: {got}")
                        continue
                    got = (state, channel.cause(), channel.Details.raw_cause)
                    if got != (State.IDLE, *OUTCOMES[number]):
                        wrong.append(f"{number}: {got}")
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def network() -> None:
        while not stop.is_set():
            sim.network.place_call("100", hold=0.01)
            time.sleep(0.01)

    def acceptor() -> None:
        while not stop.is_set():
            channel = card.wait_for_incoming_call(0.1)
            if channel is not None:
                with channel:
                    channel.answer()

    with Card.open(sim.device_path) as card:
        helpers = [threading.Thread(target=network), threading.Thread(target=acceptor)]
        callers = [threading.Thread(target=caller, args=(i,)) for i in range(40)]
        for t in helpers + callers:
            t.start()
        for t in callers:
            t.join(120)
        stop.set()
        for t in helpers:
            t.join(10)
        assert errors == []
        assert wrong == []
        assert len(glare) < 40 * 6 // 10
        assert not any(t.is_alive() for t in callers)


def test_plain_pattern_without_release(sim: SimulatedCard, tc: Card) -> None:
    """`channel = card.free_channel(); channel.call(n)` once from each of 24 threads: each
    reads the cause its own number was routed to."""
    causes = {f"70{i:02}": (17, 21, 34, 42, 27, 1)[i % 6] for i in range(24)}
    for number, value in causes.items():
        sim.network.route(number, Reject(value))
    results: dict[str, int | None] = {}

    def run(number: str) -> None:
        channel = tc.free_channel()
        assert channel is not None
        channel.call(number)
        results[number] = channel.Details.raw_cause

    threads = [threading.Thread(target=run, args=(n,)) for n in causes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == causes


# -- one outcome per call -----------------------------------------------------------------


@pytest.mark.parametrize("octets", [b"", None], ids=["empty", "missing"])
def test_clearing_without_a_cause_reads_as_31(
    sim: SimulatedCard, tc: Card, octets: bytes | None
) -> None:
    sim.network.route("5001", RawCause(octets, stage="alerting"))
    with free(tc) as channel:
        assert channel.call("5001") is State.IDLE
        d = channel.details
        assert (channel.cause(), d.raw_cause, d.cause_ie, d.cause_source) == (
            Cause.NORMAL, 31, b"", "remote")
        assert d.cause_location is None


@pytest.mark.libpri
@pytest.mark.skipif(not HAVE_LIBPRI, reason="libpri.h (libpri-dev) or a C compiler is missing")
def test_glare_gives_the_loser_nochannels_44(tmp_path: Path) -> None:
    """libpri (the network) takes the channel of our outgoing call for its own call: ours
    ends NOCHANNELS / 44, and the reserved channel is not handed to the network's call."""
    peer = LibpriProcess(build(tmp_path))
    try:
        peer.send("route 4400 glare")
        with (
            SimulatedCard(role="TE", dchannels={0: peer.card_sock}) as sim,
            Card.open(sim.device_path) as card,
        ):
            wait_for(lambda: card.spans[0].dchannel_up, what="D-channel up")
            with free(card) as channel:
                assert channel.call("4400") is State.IDLE
                d = channel.details
                assert (channel.cause(), d.raw_cause, d.cause_source) == (
                    Cause.NOCHANNELS, 44, "local")
                wait_for(lambda: peer.seen(f"hangup {channel.number} 44"), what="44 at libpri")
                assert channel.state() is State.IDLE
                assert (channel.cause(), channel.details.raw_cause) == (Cause.NOCHANNELS, 44)
            assert card.wait_for_incoming_call(0.2) is None
    finally:
        peer.close()


# -- nothing left up ------------------------------------------------------------------------


def test_leaving_with_on_an_exception_clears_calls(sim: SimulatedCard) -> None:
    with pytest.raises(RuntimeError), Card.open(sim.device_path) as card:
        card.channel(0, 3).call("3302")
        raise RuntimeError("application bug")
    result = sim.network.received[-1].wait(5)
    assert (result.cleared_by, result.cause) == ("card", 16)


def test_keep_calls_leaves_them_for_the_next_card(sim: SimulatedCard) -> None:
    with Card.open(sim.device_path, keep_calls=True) as card:
        assert free(card).call("3302", "77") is State.ANSWERED
    handle = sim.network.received[-1]
    assert not handle.result.cleared
    with Card.open(sim.device_path) as card:
        channel = card.channel(0, 1)
        assert channel.state() is State.ANSWERED
        assert channel.details.call_from == "77"
        assert not channel.owned  # a new session owns nothing
        assert channel.hang_up() is State.IDLE
    assert (handle.wait(5).cleared_by, handle.result.cause) == ("card", 16)


_HOST = """
import sys
import telecard
card = telecard.Card.open(sys.argv[1], watchdog=1.0)
channel = card.free_channel()
assert channel.call("5555") is telecard.State.ANSWERED
print("up", flush=True)
sys.stdin.read()
"""


def test_an_idle_host_feeds_a_watchdog_shorter_than_its_idle_check(sim: SimulatedCard) -> None:
    """With a grace period below the event thread's 0.5 s idle check, the host looks at the
    card three times a period: idle, it keeps its answered call up and the watchdog never
    expires (which, armed for good since 1.4, would clear the call)."""
    sim.network.route("5555", Answer())
    with Card.open(sim.device_path, watchdog=0.45) as tc, tc.events() as events:
        channel = free(tc)
        assert channel.call("5555") is State.ANSWERED
        handle = sim.network.received[-1]
        time.sleep(2.0)
        assert not handle.result.cleared and channel.state() is State.ANSWERED
        while (event := events.get(0)) is not None:
            assert event.code is not EventCode.WATCHDOG
        channel.release()


def test_an_idle_host_feeds_the_watchdog_from_open_and_after_a_reset(sim: SimulatedCard) -> None:
    """Nothing but the boot's events has happened: the host still looks at the card every
    idle check, and the watchdog never expires, before and after a card reset (the events
    written before posting began are consumed with AUTO_ACK, datasheet 3.1, so no repeated
    EVENT interrupt keeps the event thread from its idle checks)."""
    with Card.open(sim.device_path, watchdog=1.0) as tc, tc.events() as events:
        for reset in (False, True):
            if reset:
                sim.faults.reset()
                wait_for(lambda: _watchdog_ms(tc) == 1000, 5, "the card set up again")
            channel = free(tc)
            time.sleep(3.0)
            assert all(e.code is not EventCode.WATCHDOG for e in _taken(events))
            assert tc.device.read_channel(0, channel.number).owned
            channel.release()


def test_an_idle_host_feeds_the_watchdog_while_events_keep_coming(sim: SimulatedCard) -> None:
    """News every 50 ms (a flapping span, say) and nothing to ask the card: the event
    thread's waits never time out, yet the host still asks the card once a wait's length
    without a request, and the watchdog never expires."""
    with Card.open(sim.device_path, watchdog=1.0) as tc, tc.events() as events:
        channel = free(tc)
        end = time.monotonic() + 3.0
        while time.monotonic() < end:
            call_on_loop(sim.firmware.loop, sim.firmware.push_event, 0, 0, rm.EV_SPAN, rm.DCHAN_UP)
            time.sleep(0.05)
        assert all(e.code is not EventCode.WATCHDOG for e in _taken(events))
        assert tc.device.read_channel(0, channel.number).owned
        channel.release()


def test_a_channel_being_released_is_not_reserved_again_before_its_unreserve(
    tc: Card, monkeypatch: pytest.MonkeyPatch
) -> None:
    """release() lets the channel go (owned False) before its UNRESERVE reaches the card:
    meanwhile it is not free, so another caller's RESERVE cannot go first and be undone by
    that UNRESERVE (review finding: host owned, card not)."""
    channel = free(tc)
    sending, go = threading.Event(), threading.Event()
    unreserve = channel._unreserve

    def held_unreserve() -> None:
        sending.set()
        go.wait(5)
        unreserve()

    monkeypatch.setattr(channel, "_unreserve", held_unreserve)
    releasing = threading.Thread(target=channel.release)
    releasing.start()
    assert sending.wait(5)
    with pytest.raises(InvalidStateError):
        channel.reserve()
    go.set()
    releasing.join(5)
    assert not releasing.is_alive()
    channel.reserve()
    assert channel.owned and tc.device.read_channel(0, channel.number).owned
    channel.release()


def test_a_stale_unreserve_does_not_undo_a_new_owners_reserve(tc: Card) -> None:
    """An UNRESERVE still queued for the command lock when another sender's has already gone
    (release() racing the RESERVE taken back after a watchdog expiry, review finding) is not
    sent after the next owner's RESERVE."""
    channel = free(tc)
    channel.release()
    channel.reserve()  # the next owner
    channel._unreserve()  # the stale one, late
    assert channel.owned and tc.device.read_channel(0, channel.number).owned
    channel.release()
    assert not tc.device.read_channel(0, channel.number).owned
    # The window before the next owner's RESERVE shows here (owned not yet set): none asked.
    tc.device.command(0, channel.number, Command.RESERVE)
    channel._unreserve()
    assert tc.device.read_channel(0, channel.number).owned
    tc.device.command(0, channel.number, Command.UNRESERVE)


def test_an_unconfirmed_unreserve_goes_again_while_events_keep_coming(sim: SimulatedCard) -> None:
    """An UNRESERVE the card did not confirm (a stalled link outlasting release()'s retries)
    is sent again by the event thread's idle check even while news keeps waking it, so the
    channel becomes free again."""
    with Card.open(sim.device_path) as tc:
        channel = free(tc)
        with channel._lock:  # release() given up on its UNRESERVE
            channel._owned = False
            channel._ask_unreserve()
        end = time.monotonic() + 2.0
        while channel._pending() and time.monotonic() < end:
            call_on_loop(sim.firmware.loop, sim.firmware.push_event, 0, 0, rm.EV_SPAN, rm.DCHAN_UP)
            time.sleep(0.05)
        assert not channel._pending()
        assert not tc.device.read_channel(0, channel.number).owned
        assert tc.free_channel() is channel
        channel.release()


def test_retries_wait_for_no_command_while_events_keep_coming(sim: SimulatedCard) -> None:
    """A retry due on a channel whose command lock a caller holds (a command waiting out a
    stalled link, say) does not hold the news up: while events keep coming the event thread
    skips that channel, and sends the retry once the lock is free (review finding: 2.5 s
    without any event handed out)."""
    with Card.open(sim.device_path) as tc:
        handed: list[float] = []
        tc.add_event_listener(lambda event: handed.append(time.monotonic()))
        channel = free(tc)
        with channel._lock:  # release() given up on its UNRESERVE
            channel._owned = False
            channel._ask_unreserve()
        with channel._command_lock:
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                call_on_loop(
                    sim.firmware.loop, sim.firmware.push_event, 0, 0, rm.EV_SPAN, rm.DCHAN_UP
                )
                time.sleep(0.05)
            assert channel._pending()
        gaps = [b - a for a, b in itertools.pairwise(handed)]
        assert len(handed) > 20 and max(gaps) < 1.0
        wait_for(lambda: not channel._pending(), 5, "the UNRESERVE sent again")
        assert not tc.device.read_channel(0, channel.number).owned


def _watchdog_ms(tc: Card) -> int | None:
    """HOST_WATCHDOG, None while the card is rebooting."""
    try:
        return int.from_bytes(tc.device.read(rm.REG_HOST_WATCHDOG, 4), "little")
    except TelecardError:
        return None


def _taken(events: EventReader) -> list[Event]:
    """The events queued in `events` now."""
    taken = []
    while (event := events.get(0)) is not None:
        taken.append(event)
    return taken


def test_killed_host_has_its_calls_cleared_by_the_watchdog(sim: SimulatedCard) -> None:
    sim.network.route("5555", Answer())
    host = python(_HOST, sim.device_path)
    try:
        assert host.stdout is not None and host.stdout.readline() == "up\n"
        handle = sim.network.received[-1]
        time.sleep(2.0)  # the watchdog is fed while the host lives, however idle
        assert not handle.result.cleared
        host.kill()
        killed = time.monotonic()
        result = handle.wait(5)
    finally:
        host.kill()
        host.wait()
    assert time.monotonic() - killed < 1.0 + 0.5 + 0.5  # grace period, check, margin
    assert (result.cleared_by, result.cause, result.location) == ("card", 41, 0)


def test_reservations_taken_back_after_the_watchdog_expired_under_a_live_host(
    sim: SimulatedCard,
) -> None:
    """A stall longer than the watchdog: the card concludes that the host is gone and drops
    every reservation (datasheet 2.6). The host, alive, learns it from the WATCHDOG event and
    reserves its channels again, so the channel it owns is offered no incoming call; one it
    released meanwhile stays free."""
    with Card.open(sim.device_path, watchdog=1.0) as tc, tc.events() as events:
        kept, given_up = free(tc), free(tc)
        sim.faults.stall(2.0)
        given_up.release()  # waits out the stall (its UNRESERVE goes once the card reads again)
        while (event := events.get(10)) is not None and event.code is not EventCode.WATCHDOG:
            pass
        assert event is not None, "no WATCHDOG event"
        wait_for(lambda: tc.device.read_channel(0, kept.number).owned, 5, "RESERVE again")
        assert kept.owned and not given_up.owned
        assert not tc.device.read_channel(0, given_up.number).owned
        handle = sim.network.place_call("100", timeslot=kept.number)  # exclusive
        assert handle.wait(5).cause == 44
        kept.release()


_LATE_HOST = """
import sys
import telecard
card = telecard.Card.open(sys.argv[1], watchdog=0.3)
channel = card.free_channel()
print("ready", flush=True)
sys.stdin.readline()
print("calling", flush=True)
channel.call("5555")
"""


def test_a_call_placed_after_its_killed_host_went_is_cleared_by_the_watchdog(
    sim: SimulatedCard,
) -> None:
    """The host's MAKE_CALL waits behind a stall of the link while the card's watchdog
    expires (it has nothing to clear yet), and the host is killed: when the stall ends the card
    places the call nobody owns any more, and its watchdog, still armed (datasheet 2.6),
    clears it one grace period later."""
    sim.network.route("5555", Answer())
    host = python(_LATE_HOST, sim.device_path)
    try:
        assert host.stdout is not None and host.stdout.readline() == "ready\n"
        assert host.stdin is not None
        sim.faults.stall(4.0)  # outlasts the host, which is killed within about 1.5 s
        host.stdin.write("go\n")
        host.stdin.flush()
        assert host.stdout.readline() == "calling\n"
        time.sleep(0.3)  # MAKE_CALL is written (the driver resends it meanwhile)
        host.kill()
        host.wait()
        (handle,) = sim.network.wait_received(1, timeout=10)  # once the stall is over
        result = handle.wait(5)
    finally:
        host.kill()
        host.wait()
    assert result.answered
    assert (result.cleared_by, result.cause, result.location) == ("card", 41, 0)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_signal_clears_the_call(sim: SimulatedCard, signum: int) -> None:
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "telecard.cli", "call", "3303", "--device", sim.device_path,
         "--timeout", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=subprocess_env(),
    )
    try:
        (handle,) = sim.network.wait_received(1, timeout=20)
        handle.wait(10, until="alerted")
        proc.send_signal(signum)
        _, stderr = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signum
    assert "Traceback" not in stderr and "the call was cleared" in stderr
    assert (handle.wait(5).cleared_by, handle.result.cause) == ("card", 16)


# -- API and card agree after link trouble --------------------------------------------------


def _stall_soon(sim: SimulatedCard, after: float, seconds: float) -> threading.Timer:
    timer = threading.Timer(after, sim.faults.stall, args=(seconds,))
    timer.start()
    return timer


def test_stall_longer_than_the_retries_during_hang_up(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    assert channel.call("3302") is State.ANSWERED
    sim.faults.stall(2.0)  # the driver gives up after 1 s (250 ms x 4)
    assert channel.hang_up() is State.IDLE
    result = sim.network.received[-1].wait(5)
    assert (result.cleared_by, result.cause) == ("card", 16)
    assert (channel.cause(), channel.details.raw_cause) == (Cause.NORMAL, 16)
    assert channel.call("3301") is State.IDLE and channel.cause() is Cause.BUSY
    channel.release()


def test_stall_during_call_timeout_clearing(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    timer = _stall_soon(sim, 0.25, 2.0)
    assert channel.call("3303", seconds_timeout=0.3) is State.IDLE
    timer.join()
    result = sim.network.received[-1].wait(5)
    assert (result.cleared_by, result.cause) == ("card", 102)
    assert channel.cause() is Cause.TIMEOUT
    assert channel.call("3301") is State.IDLE and channel.cause() is Cause.BUSY
    channel.release()


def test_call_placed_through_a_stall_goes_on(sim: SimulatedCard, tc: Card) -> None:
    """MAKE_CALL whose response is lost to a long stall: the card placed the call once, and
    the API shows it and can clear it."""
    channel = free(tc)
    sim.faults.stall(1.5)
    state = channel.call("3302", seconds_timeout=10)
    assert state is State.ANSWERED
    assert len(sim.network.received) == 1
    assert channel.hang_up() is State.IDLE
    channel.release()


def test_hang_up_gives_up_only_when_the_card_is_lost(sim: SimulatedCard, tc: Card) -> None:
    channel = free(tc)
    assert channel.call("3302") is State.ANSWERED
    sim.faults.vanish()
    with pytest.raises(DeviceLostError):
        channel.hang_up()
    assert channel.state() is State.ERROR and channel.cause() is Cause.ERROR
    channel.release()  # nothing left to release, and no error for it


def test_a_call_that_raised_device_lost_finds_its_channel_in_error(
    sim: SimulatedCard, tc: Card, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whichever thread learns first that the card is gone (the event thread, say), telling
    the channels takes a while (slowed here to 20 ms a channel): hang_up() raises
    DeviceLostError only once its channel shows ERROR, never while another thread is still
    working through the channels."""
    channel = tc.channel(0, 30)  # the last channel told, for the widest window
    assert channel.call("3302") is State.ANSWERED
    fail = CallChannel._fail

    def slow_fail(self: CallChannel, *, lost: bool) -> None:
        time.sleep(0.02)
        fail(self, lost=lost)

    monkeypatch.setattr(CallChannel, "_fail", slow_fail)
    sim.faults.vanish()
    with pytest.raises(DeviceLostError):
        channel.hang_up()
    assert channel.state() is State.ERROR and channel.cause() is Cause.ERROR


def test_link_timeout_is_raised_for_a_card_that_never_answers(
    sim: SimulatedCard, monkeypatch: pytest.MonkeyPatch
) -> None:
    import telecard.channel

    monkeypatch.setattr(telecard.channel, "CLEAR_WAIT", 1.5)
    with Card.open(sim.device_path, watchdog=None) as card:
        channel = free(card)
        assert channel.call("3302") is State.ANSWERED
        sim.faults.stall(6.0)
        with pytest.raises(LinkTimeoutError):
            channel.hang_up()
        assert channel.state() is State.ANSWERED  # as on the card, until it says otherwise
        wait_for(lambda: channel.state() is State.IDLE, timeout=10, what="the pump's retry")
    result = sim.network.received[-1].wait(5)
    assert (result.cleared_by, result.cause) == ("card", 16)


def test_channel_objects_are_reused(tc: Card) -> None:
    channel: CallChannel = free(tc)
    channel.release()
    assert tc.channel(0, channel.number) is channel


def test_channel_in_maintenance_is_never_handed_out() -> None:
    """Q.931 §5.3.4.3: the network never answers the card's RELEASE (T308 twice), so the call
    ends for the host as usual while the channel goes to MAINTENANCE, which free_channel()
    skips; the card's RESTART, sent again on T316, is acknowledged once the network hears
    again and the channel is free once more."""
    timers = {"T305": 0.1, "T308": 0.1, "T316": 1.5}  # T316 long enough for the steps below
    with SimulatedCard(timers=timers) as sim, Card.open(sim.device_path) as card:
        sim.network.route("100", Answer())
        entity = call_on_loop(sim.loop, sim.network.entity, 0)
        hears = entity.lapd.on_data
        channel = free(card)
        assert channel.number == 1 and channel.call("100") is State.ANSWERED
        events = card.events(timeout=5)

        def next_state() -> CardState:
            while (event := events.get(5)) is not None:
                if event.channel == 1 and event.card_state is not None:
                    return event.card_state
            raise AssertionError("no state change on channel 1")

        call_on_loop(sim.loop, setattr, entity.lapd, "on_data", lambda payload: None)
        assert channel.hang_up() is State.IDLE  # DISCONNECT, T305, RELEASE, T308 twice
        assert channel.details.raw_cause == 16 and channel.details.cause_source == "local"
        assert [next_state() for _ in range(3)] == [
            CardState.CLEARING, CardState.IDLE, CardState.MAINTENANCE]
        wait_for(lambda: not channel.in_service)
        assert channel.state() is State.IDLE  # its call has ended
        with pytest.raises(InvalidStateError, match="out of service"):
            channel.call("100")  # refused by the host, before anything reaches the card
        channel.release()
        other = free(card)
        assert other.number == 2  # channel 1 is out of service
        other.release()
        call_on_loop(sim.loop, setattr, entity.lapd, "on_data", hears)
        assert next_state() is CardState.IDLE  # T316: RESTART again, acknowledged this time
        events.close()
        wait_for(lambda: channel.in_service)
        assert free(card).number == 1
