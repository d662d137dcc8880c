"""The C driver against the simulated card over a real pty: every register, event, cause and
command path, exclusivity, link faults, resets, a vanished device, and threads at once."""

import faulthandler
import gc
import os
import shutil
import subprocess
import sys
import threading
import time
from binascii import crc_hqx
from collections.abc import Callable, Iterator

import pytest

import firmware_sim
from firmware_sim import regmap as rm
from firmware_sim.card import hook_signalling
from firmware_sim.demo_plan import simulated_card
from firmware_sim.hostlink import encode
from telecard import (
    Card,
    CardResetError,
    Cause,
    CommandError,
    Device,
    DeviceBusyError,
    DeviceLostError,
    InvalidStateError,
    LinkTimeoutError,
    MalformedCauseError,
    ProtocolError,
    State,
    TelecardError,
)
from telecard._cdriver import ffi, lib
from telecard.device import CommandPool, CommandResult
from telecard.registers import CardState, Command, MailboxStatus

ALL_IRQS = rm.INT_EVENT | rm.INT_OVERFLOW | rm.INT_RESET
PYTHONPATH = os.pathsep.join(p for p in sys.path if p)
CDRIVER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cdriver")


def u32(value: int) -> bytes:
    return value.to_bytes(4, "little")


@pytest.fixture(autouse=True)
def watchdog() -> Iterator[None]:
    """A hang fails the run with every thread's traceback instead of blocking CI."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def card() -> Iterator[firmware_sim.SimulatedCard]:
    """A card whose channels the tests drive through the register hooks (no Q.931)."""
    with firmware_sim.SimulatedCard(spans=2, line="E1", signalling_factory=hook_signalling) as c:
        yield c


@pytest.fixture
def dev(card: firmware_sim.SimulatedCard) -> Iterator[Device]:
    with Device.open(card.device_path) as d:
        d.write(rm.REG_INT_MASK, u32(ALL_IRQS))
        d.drain_events()  # the boot's RESET and SPAN events
        d.write(rm.REG_INT_STATUS, u32(rm.INT_RESET))
        while d.wait_irq(0.06) is not None:
            pass
        yield d


def card_reg(dev: Device, reg: int) -> int:
    return int.from_bytes(dev.read(reg, 4), "little")


# --- identity and registers -----------------------------------------------------------------


def test_handshake_reads_the_identity(card: firmware_sim.SimulatedCard, dev: Device) -> None:
    info = dev.info
    assert info.magic == rm.MAGIC_VALUE
    assert info.proto_version >> 8 == rm.PROTO_VERSION >> 8
    assert info.num_spans == 2
    assert info.boot_id == card.firmware.boot_id
    assert dev.read(rm.REG_MAGIC, 4) == b"TCRD"


def test_write_and_read_back(dev: Device) -> None:
    dev.write(rm.REG_INT_MASK, u32(rm.INT_EVENT))
    assert card_reg(dev, rm.REG_INT_MASK) == rm.INT_EVENT


def test_span_registers(card: firmware_sim.SimulatedCard, dev: Device) -> None:
    card.firmware.set_span(1, alarms=rm.ALARM_LOS | rm.ALARM_AIS)
    raw = dev.read(rm.span_reg(1, 0), rm.SPAN_STRIDE)
    assert raw[rm.SPAN_LINE_TYPE] == rm.LINE_E1
    assert raw[rm.SPAN_ALARMS] == rm.ALARM_LOS | rm.ALARM_AIS
    assert raw[rm.SPAN_NUM_CHANNELS] == 30
    assert raw[rm.SPAN_DCHANNEL_TIMESLOT] == 16


def test_long_ranges_are_split_into_transactions(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    card.firmware.set_channel(1, 31, state=rm.ST_ACTIVE, called="12345")
    blocks = dev.read(rm.CHAN_BASE, 2 * rm.SLOTS_PER_SPAN * rm.CHAN_STRIDE)  # 8 KiB
    everything = dev.read(0, rm.REG_SPACE_SIZE)  # 144 KiB: nine READs
    offset = (rm.SLOTS_PER_SPAN + 31) * rm.CHAN_STRIDE
    assert blocks[offset + rm.CHAN_STATE] == rm.ST_ACTIVE
    assert everything[rm.CHAN_BASE : rm.CHAN_BASE + len(blocks)] == blocks
    mbox = bytes(range(32))
    dev.write(rm.mbox_reg(1, 2, rm.MBOX_CALLED), mbox)
    assert dev.read(rm.mbox_reg(1, 2, rm.MBOX_CALLED), 32) == mbox


def test_card_statuses_become_exceptions(dev: Device) -> None:
    with pytest.raises(ProtocolError, match="READ_ONLY"):
        dev.write(rm.REG_MAGIC, b"XXXX")
    with pytest.raises(ProtocolError, match="BAD_VALUE"):
        dev.write(rm.RING_TAIL, u32(card_reg(dev, rm.RING_HEAD) + 5))
    with pytest.raises(ValueError, match="outside the register space"):
        dev.read(rm.REG_SPACE_SIZE - 2, 4)  # refused before it reaches the card
    assert dev.read(rm.REG_MAGIC, 4) == b"TCRD"


# --- interrupts and the event ring --------------------------------------------------------


def test_wait_irq_times_out_with_none(dev: Device) -> None:
    t0 = time.monotonic()
    assert dev.wait_irq(0.1) is None
    assert 0.09 <= time.monotonic() - t0 < 0.5


def test_wait_irq_with_a_zero_timeout_sees_frames_already_received(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    """Polling without waiting still reads the IRQ frame the card sent while nobody read."""
    card.firmware.push_event(0, 3, rm.EV_STATE, 1)
    time.sleep(0.1)  # the IRQ frame sits unread in the tty
    assert dev.wait_irq(0) == rm.INT_EVENT
    events, _ = dev.drain_events()
    assert [(e.channel, e.arg) for e in events] == [(3, 1)]


def test_the_newest_interrupt_waiter_takes_the_interrupt(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    """Of two threads in wait_irq, the one that began waiting last is woken and takes the
    interrupt; the other sleeps on, and takes the next one once the newer has left."""
    got: dict[str, int | None] = {}

    def wait(name: str, timeout: float) -> None:
        got[name] = dev.wait_irq(timeout)

    older = threading.Thread(target=wait, args=("older", 3.0))
    older.start()
    time.sleep(0.2)  # older is asleep in the driver
    newer = threading.Thread(target=wait, args=("newer", 3.0))
    newer.start()
    time.sleep(0.2)
    card.firmware.push_event(0, 3, rm.EV_STATE, 1)
    newer.join(5)
    assert got == {"newer": rm.INT_EVENT}  # the older one did not return
    card.firmware.push_event(0, 3, rm.EV_STATE, 2)
    older.join(5)
    assert got == {"newer": rm.INT_EVENT, "older": rm.INT_EVENT}
    events, _ = dev.drain_events()
    assert [e.arg for e in events] == [1, 2]


def test_events_arrive_in_order(card: firmware_sim.SimulatedCard, dev: Device) -> None:
    for i in range(5):
        card.firmware.push_event(0, 3, rm.EV_STATE, i)
    assert dev.wait_irq(1.0) == rm.INT_EVENT
    events, overflow = dev.drain_events()
    assert not overflow
    assert [(e.span, e.channel, e.code, e.arg) for e in events] == [
        (0, 3, rm.EV_STATE, i) for i in range(5)
    ]
    assert [e.seq for e in events] == sorted(e.seq for e in events)
    assert dev.drain_events() == ([], False)
    assert card_reg(dev, rm.REG_INT_STATUS) & rm.INT_EVENT == 0


def test_drain_across_the_ring_wrap_and_with_max(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    for _ in range(3):  # 3 × 700 events: the ring wraps
        for i in range(700):
            card.firmware.push_event(1, 1, rm.EV_STATE, i & 0xFF)
        first, _ = dev.drain_events(max=100)
        rest, overflow = dev.drain_events()
        assert not overflow
        assert [e.arg for e in first + rest] == [i & 0xFF for i in range(700)]
    assert card_reg(dev, rm.RING_HEAD) == card_reg(dev, rm.RING_TAIL)


def test_overflow_is_reported_once_and_cleared(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    for i in range(rm.RING_ENTRIES + 10):
        card.firmware.push_event(0, 1, rm.EV_STATE, i & 0xFF)
    bits = 0
    while not bits & rm.INT_OVERFLOW:  # the EVENT IRQs may be read first
        irq = dev.wait_irq(1.0)
        assert irq is not None
        bits |= irq
    events, overflow = dev.drain_events(max=2000)
    assert overflow and len(events) == rm.RING_ENTRIES
    assert card_reg(dev, rm.RING_DROPPED) == 10
    assert card_reg(dev, rm.RING_OVERFLOW) == 0
    assert card_reg(dev, rm.REG_INT_STATUS) & rm.INT_OVERFLOW == 0
    card.firmware.push_event(0, 1, rm.EV_STATE, 1)
    events, overflow = dev.drain_events()
    assert len(events) == 1 and not overflow


# --- cause registers ----------------------------------------------------------------------


def test_channel_cause(card: firmware_sim.SimulatedCard, dev: Device) -> None:
    assert dev.channel_cause(0, 5) is None
    card.firmware.set_channel(0, 5, state=rm.ST_IDLE, cause=b"\x82\xe6303", cause_source=2)
    cause = dev.channel_cause(0, 5)
    assert cause is not None
    assert (cause.location, cause.value, cause.diagnostic) == (2, 102, b"303")
    card.firmware.set_channel(1, 7, cause=b"\x01\x83\x90", cause_source=1)
    cause = dev.channel_cause(1, 7)
    assert cause is not None and cause.recommendation == 3
    card.firmware.set_channel(1, 8, cause=b"\x82\x10", cause_source=1)
    with pytest.raises(MalformedCauseError) as info:
        dev.channel_cause(1, 8)
    assert info.value.raw == b"\x82\x10"
    with pytest.raises(ValueError, match="span"):
        dev.channel_cause(16, 0)


# --- mailboxes ----------------------------------------------------------------------------


def chan(dev: Device, span: int, ts: int, offset: int, n: int = 1) -> bytes:
    return dev.read(rm.chan_reg(span, ts, offset), n)


def test_command_round_trip(card: firmware_sim.SimulatedCard, dev: Device) -> None:
    assert dev.command(0, 1, rm.CMD_MAKE_CALL, called="5551234", calling="100").status == rm.MB_DONE
    assert chan(dev, 0, 1, rm.CHAN_STATE)[0] == rm.ST_OUT_SETUP
    assert chan(dev, 0, 1, rm.CHAN_CALLED, 7) == b"5551234"
    assert dev.command(0, 1, rm.CMD_RELEASE, cause=b"\x80\x90").status == rm.MB_DONE
    events, _ = dev.drain_events()
    # The responses carried the results: the events are what the commands changed.
    assert [(e.channel, e.code, e.arg) for e in events] == [
        (1, rm.EV_STATE, rm.ST_OUT_SETUP),
        (1, rm.EV_CLEARED, rm.ST_IDLE),
    ]
    card.firmware.set_channel(1, 20, state=rm.ST_IN_PRESENT, direction=rm.DIR_INCOMING)
    assert dev.command(1, 20, rm.CMD_ALERT).status == rm.MB_DONE
    assert dev.command(1, 20, rm.CMD_ANSWER).status == rm.MB_DONE
    assert chan(dev, 1, 20, rm.CHAN_STATE)[0] == rm.ST_CONNECTING


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"cmd": rm.CMD_ALERT}, rm.MB_ERR_STATE),
        ({"cmd": rm.CMD_MAKE_CALL, "called": "12a"}, rm.MB_ERR_ARGUMENT),
        ({"cmd": rm.CMD_MAKE_CALL}, rm.MB_ERR_ARGUMENT),
        ({"cmd": 99}, rm.MB_ERR_UNKNOWN),
    ],
)
def test_command_refusals(dev: Device, kwargs: dict, status: int) -> None:
    cmd = kwargs.pop("cmd")
    with pytest.raises(CommandError) as info:
        dev.command(0, 2, cmd, **kwargs)
    assert info.value.status == status


def test_command_without_dchannel(card: firmware_sim.SimulatedCard, dev: Device) -> None:
    card.firmware.set_span(0, dchannel_up=False)
    with pytest.raises(CommandError) as info:
        dev.command(0, 3, rm.CMD_MAKE_CALL, called="1")
    assert info.value.status == rm.MB_ERR_NO_LINK


def test_command_arguments_are_checked_on_the_host(dev: Device) -> None:
    with pytest.raises(ValueError):
        dev.command(0, 1, rm.CMD_MAKE_CALL, called="1" * 33)
    with pytest.raises(ValueError, match="ts"):
        dev.command(0, 32, rm.CMD_ALERT)
    with pytest.raises(ValueError, match="cmd"):
        dev.command(0, 1, 256)


def reap_all(pool: CommandPool, n: int) -> dict[int, object]:
    """The outcomes of `n` commands submitted to `pool`, by token; each token once."""
    outcomes: dict[int, object] = {}
    deadline = time.monotonic() + 10
    while len(outcomes) < n and time.monotonic() < deadline:
        for token, outcome in pool.reap(1.0) or []:
            assert token not in outcomes
            outcomes[token] = outcome
    return outcomes


def test_command_pool_runs_commands_on_the_drivers_threads(dev: Device) -> None:
    """Submitted commands come back from reap() under their tokens, each once, as
    Device.command() returns or raises them (a refusal as CommandError)."""
    pool = dev.command_pool(8)
    bearers = [ts for ts in range(1, 32) if ts != 16]  # E1 timeslot 16 is the D-channel
    for ts in bearers:
        assert pool.submit(ts, 0, ts, Command.MAKE_CALL, called=str(5550000 + ts))
    assert pool.submit(99, 0, 1, Command.MAKE_CALL, called="12a")  # refused: BAD_ARGUMENT
    outcomes = reap_all(pool, 31)
    assert sorted(outcomes) == [*bearers, 99]
    for ts in bearers:
        result = outcomes[ts]
        assert isinstance(result, CommandResult)
        assert (result.status, result.state) == (MailboxStatus.DONE, CardState.OUT_SETUP)
        assert chan(dev, 0, ts, rm.CHAN_CALLED, 7) == str(5550000 + ts).encode()
    refused = outcomes[99]
    assert isinstance(refused, CommandError) and refused.status == rm.MB_ERR_ARGUMENT
    assert pool.reap(0) == []
    with pytest.raises(ValueError, match="called"):
        pool.submit(100, 0, 1, Command.MAKE_CALL, called="1" * 33)
    with pytest.raises(ValueError, match="threads"):
        dev.command_pool(lib.TC_MAX_OUTSTANDING + 1)


def test_command_pool_full_closed_and_stopped(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    """With the card stalled, TC_POOL_JOBS commands fill the pool (submit() says False
    for the next); closing the device ends those in flight with an error, every one still
    reaped once; then submit() raises DeviceLostError and reap() returns None."""
    pool = dev.command_pool(4)
    card.faults.stall(0.5)
    jobs = lib.TC_POOL_JOBS
    for token in range(jobs):
        assert pool.submit(token, 0, 1 + token % 30, Command.ALERT)
    assert not pool.submit(jobs, 0, 1, Command.ALERT)
    dev.close()
    outcomes = reap_all(pool, jobs)
    assert sorted(outcomes) == list(range(jobs))
    assert all(isinstance(o, TelecardError) for o in outcomes.values())
    with pytest.raises(DeviceLostError):
        pool.submit(jobs, 0, 1, Command.ALERT)
    assert pool.reap(1.0) is None


def test_command_pool_runs_a_burst_at_once(card: firmware_sim.SimulatedCard) -> None:
    """A burst of commands submitted together runs on as many threads as the pool allows,
    not queued behind the thread the first one woke (review finding: with the card never
    answering, the first of 16 commands took one timeout and some took two or more)."""
    with Device.open(card.device_path, timeout=0.5, retries=0) as dev:
        pool = dev.command_pool(16)
        assert pool.submit(0, 0, 1, Command.ALERT)  # one thread started, then idle
        assert len(reap_all(pool, 1)) == 1
        card.faults.drop_incoming(64)
        started = time.monotonic()
        for token in range(1, 17):
            assert pool.submit(token, 0, token, Command.ALERT)
        outcomes = reap_all(pool, 16)
        took = time.monotonic() - started
    assert all(isinstance(o, LinkTimeoutError) for o in outcomes.values())
    assert took < 0.9  # each one timeout (0.5 s); two in turn on one thread: 1 s


def test_command_pool_and_device_collected_with_commands_queued(
    card: firmware_sim.SimulatedCard,
) -> None:
    """A Device and its pool dropped unclosed with commands queued: the pool's threads are
    done with the handle before it is freed, whatever order the two are collected in (under
    ASan, .ci/asan.sh: the use after free the review found)."""
    dev = Device.open(card.device_path)
    pool = dev.command_pool(1)
    card.faults.stall(0.3)
    for token in range(lib.TC_POOL_JOBS):
        assert pool.submit(token, 0, 1 + token % 15, Command.ALERT)
    del dev, pool
    gc.collect()
    with Device.open(card.device_path) as again:  # the first one's lock on the device is gone
        assert again.info.magic == rm.MAGIC_VALUE


def test_command_none_is_refused_not_reported_done(dev: Device) -> None:
    """CMD 0 is no command: the card never acts on it, so STATUS still holds the previous
    command's DONE, which must not be reported as this one's result."""
    assert dev.command(0, 1, rm.CMD_MAKE_CALL, called="1").status == rm.MB_DONE
    with pytest.raises(ValueError, match="cmd") as info:
        dev.command(0, 1, rm.CMD_NONE)
    assert not isinstance(info.value, CommandError)


def test_strerror_takes_any_int() -> None:
    """No code is out of range for tc_strerror, INT_MIN included (UBSan: negation overflow)."""
    for code in (-(2**31), 2**31 - 1, -1, 0, -4096, -4109, -4126, 4096):
        assert ffi.string(lib.tc_strerror(code))


# --- exclusivity --------------------------------------------------------------------------


def test_second_open_in_process_is_busy_and_harmless(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    with pytest.raises(DeviceBusyError):
        Device.open(card.device_path)
    with pytest.raises(DeviceBusyError):
        Device.open(f"{card.device_path}?baud=115200")
    assert dev.read(rm.REG_MAGIC, 4) == b"TCRD"


def test_second_open_from_another_process_is_busy(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    code = (
        "import sys\n"
        "from telecard import Device, DeviceBusyError\n"
        "try:\n"
        "    Device.open(sys.argv[1])\n"
        "except DeviceBusyError as e:\n"
        "    print('busy', e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, card.device_path],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": PYTHONPATH},
    )
    assert out.stdout.startswith("busy"), out.stderr
    assert dev.read(rm.REG_MAGIC, 4) == b"TCRD"


def test_reopen_after_close(card: firmware_sim.SimulatedCard) -> None:
    for _ in range(3):
        with Device.open(card.device_path) as d:
            assert d.read(rm.REG_MAGIC, 4) == b"TCRD"


def test_serial_device_string(card: firmware_sim.SimulatedCard) -> None:
    with Device.open(f"{card.device_path}?baud=3000000") as d:
        assert d.read(rm.REG_MAGIC, 4) == b"TCRD"
    with pytest.raises(ValueError):
        Device.open(f"{card.device_path}?baud=fast")


def test_closed_device_refuses_calls(dev: Device) -> None:
    dev.close()
    with pytest.raises(InvalidStateError):
        dev.read(0, 4)


def test_close_wakes_a_blocked_waiter(dev: Device) -> None:
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            dev.wait_irq(None)
        except TelecardError as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    dev.close()
    t.join(2)
    assert not t.is_alive()
    assert isinstance(errors[0], InvalidStateError)


def test_frame_crc_is_crc16_ccitt_false_as_the_card_computes_it() -> None:
    """The driver's table-driven CRC against the simulated card's (binascii.crc_hqx)."""
    assert lib.tc_crc16(b"123456789", 9) == 0x29B1  # the CRC catalogue's check value
    data = bytes(range(256)) * 2
    for n in (0, 1, 2, 7, 120, 512):
        assert lib.tc_crc16(data[:n], n) == crc_hqx(data[:n], 0xFFFF)


# --- link faults --------------------------------------------------------------------------


def test_garbage_and_corrupt_frames_from_the_card(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    card.faults.garbage(b"\x00noise\x7d\x7e\x7e\x7e" + b"x" * 100 + encode(b"\x82\x09\x00")[:-3])
    card.faults.corrupt(3)
    for _ in range(5):
        assert dev.read(rm.REG_MAGIC, 4) == b"TCRD"
    stats = dev.stats
    assert stats.crc_errors >= 3
    assert stats.discarded_bytes > 0
    assert stats.retries >= 3
    assert stats.timeouts == 0


def test_garbage_and_corrupt_frames_from_the_host(card: firmware_sim.SimulatedCard) -> None:
    # Before the host opens the device, write junk into the card's receive side.
    fd = os.open(card.device_path, os.O_RDWR | os.O_NOCTTY)
    good = bytearray(encode(bytes((rm.T_READ, 9)) + u32(0) + (4).to_bytes(2, "little")))
    good[3] ^= 0x01
    os.write(fd, b"garbage" + bytes(good) + b"\x7e\x01\x7e")
    os.close(fd)
    time.sleep(0.1)
    with Device.open(card.device_path) as d:
        assert card_reg(d, rm.REG_LINK_RX_CRC_ERRORS) >= 1
        assert card_reg(d, rm.REG_LINK_RX_DISCARDED) >= len(b"garbage")
        assert card_reg(d, rm.REG_LINK_RX_FRAMES) >= 1


def test_lost_frames_are_retried_and_act_once(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    card.faults.drop_incoming(2)
    assert dev.read(rm.REG_MAGIC, 4) == b"TCRD"
    before = card_reg(dev, rm.REG_LINK_RX_DUPLICATES)
    card.faults.drop(1)  # the card executes the write but its response is lost
    assert dev.command(0, 4, rm.CMD_MAKE_CALL, called="77").status == rm.MB_DONE
    assert card_reg(dev, rm.REG_LINK_RX_DUPLICATES) == before + 1
    events, _ = dev.drain_events()
    assert [(e.code, e.arg) for e in events if e.channel == 4] == [(rm.EV_STATE, rm.ST_OUT_SETUP)]
    assert dev.stats.retries >= 3


def test_stalled_card_times_out_then_recovers(card: firmware_sim.SimulatedCard) -> None:
    with Device.open(card.device_path, timeout=0.05, retries=2) as d:
        card.faults.stall(0.6)
        t0 = time.monotonic()
        with pytest.raises(LinkTimeoutError):
            d.read(rm.REG_MAGIC, 4)
        assert time.monotonic() - t0 < 0.5
        time.sleep(0.7)
        assert d.read(rm.REG_MAGIC, 4) == b"TCRD"
        assert d.stats.timeouts == 1


def test_firmware_reset_is_detected(card: firmware_sim.SimulatedCard, dev: Device) -> None:
    old = dev.info.boot_id
    card.faults.reset()
    with pytest.raises(CardResetError):
        dev.read(rm.REG_MAGIC, 4)
    assert dev.info.boot_id != old
    assert dev.info.boot_id == card.firmware.boot_id
    assert card_reg(dev, rm.REG_INT_STATUS) & rm.INT_RESET
    events, _ = dev.drain_events()
    assert any(e.code == rm.EV_RESET and e.span == 0xFF for e in events)


def test_vanished_device_raises_promptly(card: firmware_sim.SimulatedCard, dev: Device) -> None:
    errors: list[BaseException] = []

    def waiter() -> None:
        try:
            dev.wait_irq(5.0)
        except TelecardError as exc:
            errors.append(exc)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)
    t0 = time.monotonic()
    card.faults.vanish()
    t.join(1.0)
    assert not t.is_alive() and isinstance(errors[0], DeviceLostError)
    assert time.monotonic() - t0 < 0.5
    t0 = time.monotonic()
    with pytest.raises(DeviceLostError):
        dev.read(rm.REG_MAGIC, 4)
    with pytest.raises(DeviceLostError):
        dev.drain_events()
    assert time.monotonic() - t0 < 0.1


def test_vanished_device_during_a_request(card: firmware_sim.SimulatedCard, dev: Device) -> None:
    card.faults.stall(5)
    threading.Timer(0.1, card.faults.vanish).start()
    t0 = time.monotonic()
    with pytest.raises(DeviceLostError):
        dev.read(rm.REG_MAGIC, 4)
    assert time.monotonic() - t0 < 1.0


# --- threads ------------------------------------------------------------------------------


@pytest.mark.parametrize("post", [False, True], ids=["ring", "posted"])
def test_event_thread_with_concurrent_callers(
    card: firmware_sim.SimulatedCard, dev: Device, post: bool
) -> None:
    dev.set_event_post(post)
    stop = threading.Event()
    seen: list = []
    failures: list[BaseException] = []
    pushed = 300

    def events() -> None:
        try:
            while not stop.is_set() or dev.wait_irq(0.2) is not None:
                dev.wait_irq(0.05)
                while True:
                    batch, overflow = dev.drain_events()
                    assert not overflow
                    seen.extend(batch)
                    if not batch:
                        break
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)

    def registers(k: int) -> None:
        try:
            for i in range(150):
                addr = rm.mbox_reg(1, k, rm.MBOX_CALLING)
                dev.write(addr, bytes([k, i & 0xFF]))
                assert dev.read(addr, 2) == bytes([k, i & 0xFF])
                assert dev.read(rm.REG_MAGIC, 4) == b"TCRD"
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    def commands(ts: int) -> None:
        try:
            for _ in range(15):
                dev.command(0, ts, rm.CMD_MAKE_CALL, called="123")
                dev.command(0, ts, rm.CMD_RELEASE, cause=b"\x80\x90")
        except BaseException as exc:  # noqa: BLE001
            failures.append(exc)

    def pusher() -> None:
        for i in range(pushed):
            card.firmware.push_event(1, 30, rm.EV_STATE, i & 0xFF)
            if i % 50 == 0:
                time.sleep(0.01)

    workers = [threading.Thread(target=registers, args=(k,)) for k in range(4)]
    workers += [threading.Thread(target=commands, args=(ts,)) for ts in (1, 2, 3)]
    workers.append(threading.Thread(target=pusher))
    ev = threading.Thread(target=events)
    ev.start()
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    stop.set()
    ev.join(10)
    assert not failures, failures
    marked = [e for e in seen if (e.span, e.channel) == (1, 30)]
    assert [e.arg for e in marked] == [i & 0xFF for i in range(pushed)]
    for ts in (1, 2, 3):  # each command acted once, in order
        codes = [e.code for e in seen if (e.span, e.channel) == (0, ts)]
        assert codes == [rm.EV_STATE, rm.EV_CLEARED] * 15
    seqs = [e.seq for e in marked]
    assert seqs == sorted(set(seqs))
    assert dev.stats.timeouts == 0


# --- posted events (datasheet 3.1) --------------------------------------------------------


def post(dev: Device, auto_ack: bool = True) -> Device:
    """`dev` with event posting on and the ring read once (as after enabling it)."""
    dev.set_event_post(True, auto_ack=auto_ack)
    assert dev.drain_events() == ([], False)
    return dev


@pytest.fixture
def pdev(dev: Device) -> Device:
    """`dev` posting with AUTO_ACK, as the Card API runs it."""
    return post(dev)


def test_wait_events_returns_at_once_while_posted_events_wait_to_be_drained(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    """Level, not edge, for posted events: whoever took their interrupt, wait_events() does
    not sleep on events nobody drained (the event pump drains on whichever thread waits);
    wait_irq() does."""
    card.firmware.push_event(0, 3, rm.EV_STATE, 1)
    assert pdev.wait_irq(1.0) == rm.INT_EVENT  # takes the interrupt, drains nothing
    assert pdev.wait_irq(0.1) is None
    t0 = time.monotonic()
    assert pdev.wait_events(2.0) is not None
    assert time.monotonic() - t0 < 1.0
    events, _ = pdev.drain_events()
    assert [e.arg for e in events] == [1]
    assert pdev.wait_events(0.1) is None


def test_a_thread_standing_by_takes_news_only_while_nobody_else_waits(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    """The event thread waits standing by: a caller waiting for events takes them, even when
    the event thread began waiting after it (and is reading the device); once the caller has
    gone, the event thread takes the next."""
    got: dict[str, int | None] = {}

    def wait(name: str, standby: bool) -> None:
        got[name] = pdev.wait_events(3.0, standby=standby)

    caller = threading.Thread(target=wait, args=("caller", False))
    caller.start()
    time.sleep(0.2)
    event_thread = threading.Thread(target=wait, args=("event thread", True))
    event_thread.start()
    time.sleep(0.2)
    card.firmware.push_event(0, 3, rm.EV_STATE, 1)
    caller.join(5)
    assert got == {"caller": rm.INT_EVENT}
    assert [e.arg for e in pdev.drain_events()[0]] == [1]
    card.firmware.push_event(0, 3, rm.EV_STATE, 2)
    event_thread.join(5)
    assert got == {"caller": rm.INT_EVENT, "event thread": rm.INT_EVENT}
    # Event 2 waits undrained: the thread that took its interrupt drains it; a drainer does
    # not sleep on it, a thread standing by does.
    t0 = time.monotonic()
    assert pdev.wait_events(1.0) is not None
    assert time.monotonic() - t0 < 0.5
    assert pdev.wait_events(0.1, standby=True) is None


def test_a_thread_standing_by_leaves_a_callers_own_events_to_it() -> None:
    """A busy call's response and its events arrive in one read; the caller drains them
    straight after. The event thread standing by must not wake for them meanwhile (each
    such wake costs both threads a context switch and a GIL hand-over per call): it defers
    to a thread inside the driver for TC_STANDBY_DEFER_MS. A thread of its own may still
    catch the odd hop on a loaded machine, never most of them."""
    rounds, taken = 40, []
    stop = threading.Event()
    with simulated_card() as sim, Device.open(sim.device_path) as d:
        d.set_event_post(True)
        while d.drain_events()[0]:
            pass  # the boot's

        def event_thread() -> None:
            while not stop.is_set():
                if d.wait_events(0.05, standby=True) is not None:
                    taken.append(d.drain_events()[0])

        stand_by = threading.Thread(target=event_thread)
        stand_by.start()
        try:
            time.sleep(0.1)
            drained = 0
            for _ in range(rounds):
                assert d.command(0, 1, rm.CMD_MAKE_CALL, called="3301").status == rm.MB_DONE
                drained += len(d.drain_events()[0])
        finally:
            stop.set()
            stand_by.join(5)
    assert drained + sum(map(len, taken)) == 2 * rounds  # CALL_OUTGOING, CLEARED (busy)
    assert len(taken) <= rounds // 4, f"the event thread took {len(taken)} of {rounds}"


def test_news_nobody_takes_reaches_the_thread_standing_by_in_time(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    """Deferring is bounded: news that arrives while another thread sits in the driver (here
    a request the card is slow to answer) and that nobody takes reaches the thread standing
    by within TC_STANDBY_DEFER_MS, not when the other thread leaves."""
    got: list[float] = []

    def stand_by() -> None:
        if pdev.wait_events(3.0, standby=True) is not None:
            got.append(time.monotonic())

    card.faults.slow(0.8)  # answered inside the driver's retry budget (1 s)
    reader = threading.Thread(target=pdev.read, args=(rm.REG_BOOT_ID, 4))
    reader.start()
    time.sleep(0.2)
    event_thread = threading.Thread(target=stand_by)
    event_thread.start()
    time.sleep(0.1)
    pushed = time.monotonic()
    card.firmware.push_event(0, 3, rm.EV_STATE, 1)
    event_thread.join(5)
    assert reader.is_alive(), "the slow request ended first: the test proves nothing"
    reader.join(5)
    assert got and got[0] - pushed < 0.5
    assert [e.arg for e in pdev.drain_events()[0]] == [1]


def wait_frames(dev: Device, count: int) -> None:
    """Until the driver has received `count` EVENTS frames since it opened."""
    deadline = time.monotonic() + 5
    while dev.stats.event_frames < count:
        assert time.monotonic() < deadline, (dev.stats.event_frames, count)
        dev.wait_irq(0.1)


def push_in_one_step(card: firmware_sim.SimulatedCard, count: int, ts: int = 3) -> None:
    """`count` raw STATE events written in a single firmware step (one batch of frames)."""

    def push() -> None:
        for i in range(count):
            card.firmware._push_event(0, ts, rm.EV_STATE, i & 0xFF)

    firmware_sim.firmware.call_on_loop(card.loop, push)


def drain_all(dev: Device) -> tuple[list, int]:
    """Drain until empty: (events, how many drains reported an overflow)."""
    events: list = []
    overflows = 0
    while True:
        batch, overflow = dev.drain_events(max=2000)
        events += batch
        overflows += overflow
        if not batch:
            return events, overflows


@pytest.mark.parametrize("auto_ack", [True, False], ids=["auto-ack", "host-ack"])
def test_posted_events_need_no_register_access(
    card: firmware_sim.SimulatedCard, dev: Device, auto_ack: bool
) -> None:
    pdev = post(dev, auto_ack)
    before = pdev.stats
    push_in_one_step(card, 5)
    assert pdev.wait_irq(1.0) == rm.INT_EVENT
    events, overflow = pdev.drain_events()
    after = pdev.stats
    assert [(e.channel, e.code, e.arg, e.snapshot) for e in events] == [
        (3, rm.EV_STATE, i, b"") for i in range(5)
    ]
    assert not overflow
    assert after.frames_tx == before.frames_tx  # not a single request
    assert after.irqs == before.irqs  # the EVENTS frame stood in for the IRQ
    assert after.event_frames == before.event_frames + 1
    # Acknowledged by the card as it sent them, or by the next drain with one write; nothing
    # handed out twice.
    assert card_reg(pdev, rm.RING_TAIL) == card_reg(pdev, rm.RING_HEAD) - (0 if auto_ack else 5)
    tx = pdev.stats.frames_tx
    assert pdev.drain_events() == ([], False)
    assert pdev.stats.frames_tx == tx + (0 if auto_ack else 1)
    assert card_reg(pdev, rm.RING_TAIL) == card_reg(pdev, rm.RING_HEAD)
    assert card_reg(pdev, rm.REG_INT_STATUS) & rm.INT_EVENT == 0


def block_fields(raw: bytes) -> tuple[int, int, bytes, bytes]:
    """(state, seq, cause octets, called digits) of a channel block."""
    cause = raw[rm.CHAN_CAUSE : rm.CHAN_CAUSE + raw[rm.CHAN_CAUSE_LEN]]
    called = raw[rm.CHAN_CALLED : rm.CHAN_CALLED + raw[rm.CHAN_CALLED_LEN]]
    return raw[rm.CHAN_STATE], int.from_bytes(raw[4:8], "little"), cause, called


def test_snapshots_keep_the_cause_after_the_registers_moved_on(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    fw = card.firmware
    frames = pdev.stats.event_frames
    fw.set_channel(1, 9, state=rm.ST_IN_PRESENT, direction=rm.DIR_INCOMING, called="4711",
                   event=rm.EV_INCOMING)

    def clear_then_next_call() -> None:
        fw.channel_update(1, 9, state=rm.ST_IDLE, cause=b"\x82\x91", cause_source=1,
                          event=rm.EV_CLEARED)
        fw.channel_update(1, 9, state=rm.ST_OUT_SETUP, direction=rm.DIR_OUTGOING, called="9")

    firmware_sim.firmware.call_on_loop(card.loop, clear_then_next_call)
    wait_frames(pdev, frames + 2)
    events, _ = drain_all(pdev)
    incoming, cleared, state = events
    assert (incoming.code, cleared.code, state.code) == (
        rm.EV_INCOMING, rm.EV_CLEARED, rm.EV_STATE)
    assert len(incoming.snapshot) == len(cleared.snapshot) == rm.POST_SNAPSHOT_LEN
    assert state.snapshot == b""
    assert block_fields(incoming.snapshot) == (rm.ST_IN_PRESENT, incoming.seq, b"", b"4711")
    assert block_fields(cleared.snapshot) == (rm.ST_IDLE, cleared.seq, b"\x82\x91", b"4711")
    # The registers themselves already belong to the next call.
    assert block_fields(pdev.read(rm.chan_reg(1, 9, 0), rm.POST_SNAPSHOT_LEN)) == (
        rm.ST_OUT_SETUP, state.seq, b"", b"9")
    assert pdev.channel_cause(1, 9) is None


@pytest.mark.parametrize("auto_ack", [True, False], ids=["auto-ack", "host-ack"])
@pytest.mark.parametrize("followed", [True, False], ids=["gap", "last-frame"])
def test_a_lost_events_frame_falls_back_to_the_ring(
    card: firmware_sim.SimulatedCard, dev: Device, followed: bool, auto_ack: bool
) -> None:
    pdev = post(dev, auto_ack)
    push_in_one_step(card, 3, ts=1)
    pdev.wait_irq(1.0)
    assert [e.arg for e in pdev.drain_events()[0]] == [0, 1, 2]
    card.faults.drop(1)
    push_in_one_step(card, 4, ts=2)  # its EVENTS frame is lost
    if followed:
        push_in_one_step(card, 2, ts=4)  # the next frame shows the gap
    tx = pdev.stats.frames_tx
    if followed or not auto_ack:
        # Without a later frame, the card's repeated IRQ (EVENT still pending) reveals the loss.
        assert pdev.wait_irq(1.0) is not None
    else:
        # AUTO_ACK consumed the lost events: no repeat, and an idle wait makes the drain look.
        assert pdev.wait_irq(0.2) is None
    events, _ = drain_all(pdev)
    expected = [(2, i) for i in range(4)] + ([(4, 0), (4, 1)] if followed else [])
    assert [(e.channel, e.arg) for e in events] == expected
    assert pdev.stats.frames_tx > tx  # the ring was read
    assert card_reg(pdev, rm.RING_TAIL) == card_reg(pdev, rm.RING_HEAD)
    # Posting carries on afterwards, and nothing comes twice.
    push_in_one_step(card, 1, ts=5)
    pdev.wait_irq(1.0)
    tx = pdev.stats.frames_tx
    assert [(e.channel, e.arg) for e in pdev.drain_events()[0]] == [(5, 0)]
    assert pdev.stats.frames_tx == tx
    assert drain_all(pdev) == ([], 0)


def test_a_burst_spans_several_events_frames(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    before = pdev.stats
    push_in_one_step(card, 200)
    deadline = time.monotonic() + 2
    while pdev.stats.event_frames < before.event_frames + 4 and time.monotonic() < deadline:
        pdev.wait_irq(0.1)
    events, overflow = pdev.drain_events()
    assert [e.arg for e in events] == list(range(200)) and not overflow
    assert pdev.stats.frames_tx == before.frames_tx
    assert pdev.stats.event_frames == before.event_frames + 4  # 64 + 64 + 64 + 8


def test_ring_overflow_while_posting_without_auto_ack(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    pdev = post(dev, auto_ack=False)
    head = card_reg(pdev, rm.RING_HEAD)
    push_in_one_step(card, rm.RING_ENTRIES + 10)
    assert pdev.wait_irq(1.0) & rm.INT_OVERFLOW
    deadline = time.monotonic() + 2
    while pdev.stats.event_frames < 16 and time.monotonic() < deadline:
        pdev.wait_irq(0.1)
    events, overflows = drain_all(pdev)
    assert [e.seq for e in events] == list(range(head, head + rm.RING_ENTRIES))
    assert overflows == 1
    assert card_reg(pdev, rm.RING_OVERFLOW) == 0
    assert card_reg(pdev, rm.REG_INT_STATUS) & (rm.INT_OVERFLOW | rm.INT_EVENT) == 0
    push_in_one_step(card, 1)
    pdev.wait_irq(1.0)
    assert len(pdev.drain_events()[0]) == 1


def test_auto_ack_advances_ring_tail_as_frames_are_sent(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    head = card_reg(pdev, rm.RING_HEAD)
    frames = pdev.stats.event_frames
    push_in_one_step(card, 200)
    wait_frames(pdev, frames + 4)
    # Nothing drained yet, yet the card counts every event sent as consumed.
    assert card_reg(pdev, rm.RING_TAIL) == card_reg(pdev, rm.RING_HEAD) == head + 200
    assert card_reg(pdev, rm.REG_INT_STATUS) & rm.INT_EVENT == 0
    pdev.wait_irq(0)
    assert pdev.wait_irq(0.12) is None  # no 50 ms repeat: EVENT is not pending
    events, overflow = pdev.drain_events(max=2000)
    assert [e.arg for e in events] == list(range(200)) and not overflow
    assert card_reg(pdev, rm.RING_TAIL) == head + 200


def test_auto_ack_an_event_irq_is_no_reason_to_read_the_ring(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    """With AUTO_ACK an EVENT IRQ only means the card's frames are late: reading the ring would
    take the events still on their way for lost ones."""
    frames = pdev.stats.event_frames
    push_in_one_step(card, 3)
    wait_frames(pdev, frames + 1)
    card.faults.garbage(encode(bytes((rm.T_IRQ, 0)) + u32(rm.INT_EVENT)))
    assert pdev.wait_irq(1.0) == rm.INT_EVENT
    tx = pdev.stats.frames_tx
    assert [e.arg for e in drain_all(pdev)[0]] == [0, 1, 2]
    assert pdev.stats.frames_tx == tx


def test_auto_ack_a_burst_beyond_the_ring_waits_in_the_host(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    """The host neither reads the link nor drains while 3,000 events come; none is lost."""
    frames = pdev.stats.event_frames
    for _ in range(5):
        push_in_one_step(card, 600)
    wait_frames(pdev, frames + 5 * 10)
    events, overflows = drain_all(pdev)
    assert [e.arg for e in events] == [i & 0xFF for i in range(600)] * 5
    assert overflows == 0
    assert card_reg(pdev, rm.RING_DROPPED) == 0
    assert pdev.stats.events_dropped == 0


def test_auto_ack_a_gap_beyond_the_ring_is_an_overflow(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    frames = pdev.stats.event_frames
    card.faults.drop(1)
    push_in_one_step(card, 10)  # lost, and 1,200 events later overwritten in the ring
    push_in_one_step(card, 600)
    push_in_one_step(card, 600)
    wait_frames(pdev, frames + 2 * 10)  # 600 events are 10 frames
    assert drain_all(pdev) == ([], 1)
    assert card_reg(pdev, rm.RING_DROPPED) == 0
    push_in_one_step(card, 2)
    wait_frames(pdev, frames + 21)
    assert [e.arg for e in pdev.drain_events()[0]] == [0, 1]


def test_a_full_host_queue_counts_drops_and_reports_overflow(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    cap = lib.TC_EVENT_QUEUE_CAP
    steps = cap // 512 + 3  # 1,536 events beyond the queue: more than the ring still holds
    frames = pdev.stats.event_frames
    for _ in range(steps):
        push_in_one_step(card, 512)
    wait_frames(pdev, frames + steps * 8)
    assert pdev.stats.events_dropped == steps * 512 - cap
    assert pdev.stats.event_queue_peak == cap
    events, overflows = drain_all(pdev)
    assert [e.arg for e in events] == [i & 0xFF for i in range(512)] * (cap // 512)
    assert overflows == 1
    assert card_reg(pdev, rm.RING_DROPPED) == 0
    push_in_one_step(card, 1)
    wait_frames(pdev, frames + steps * 8 + 1)
    assert [e.arg for e in pdev.drain_events()[0]] == [0]


def events_body(first: int, entries: list[tuple[bytes, bytes]], *, count: int | None = None,
                tag: int = 0) -> bytes:
    body = bytes((rm.T_EVENTS, tag)) + u32(first)
    body += bytes((len(entries) if count is None else count,))
    for entry, snap in entries:
        body += entry + bytes((len(snap),)) + snap
    return body


def test_malformed_events_frames_are_dropped_and_counted(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    head = card_reg(pdev, rm.RING_HEAD)
    entry = bytes((0, 1, rm.EV_STATE, 7)) + u32(head)
    snap = bytes(rm.POST_SNAPSHOT_LEN)
    bad = [
        events_body(head, []),  # count 0
        events_body(head, [(entry, b"")] * 65),  # count > 64
        events_body(head, [(entry, b"")], count=2),  # truncated
        events_body(head, [(entry, snap[:-1])]),  # snapshot length not 0 or 112
        events_body(head, [(entry, snap)])[:-5],  # snapshot cut short
        events_body(head, [(entry, b"")]) + b"\0",  # trailing byte
        events_body(head, [(entry, b"")], tag=3),  # not tag 0
        bytes((rm.T_EVENTS, 0, 1, 2, 3)),  # no count
    ]
    before = pdev.stats
    card.faults.garbage(b"".join(encode(body) for body in bad))
    assert pdev.read(rm.REG_MAGIC, 4) == b"TCRD"  # everything before it was filed
    assert pdev.stats.event_frames_bad == before.event_frames_bad + len(bad)
    assert pdev.stats.event_frames == before.event_frames
    assert drain_all(pdev) == ([], 0)
    push_in_one_step(card, 2)
    pdev.wait_irq(1.0)
    assert [e.arg for e in pdev.drain_events()[0]] == [0, 1]


def test_posting_off_again_and_after_a_reset(
    card: firmware_sim.SimulatedCard, pdev: Device
) -> None:
    pdev.set_event_post(False)
    assert card_reg(pdev, rm.REG_EVENT_POST) == 0
    frames = pdev.stats.event_frames
    push_in_one_step(card, 2)
    assert pdev.wait_irq(1.0) == rm.INT_EVENT  # an IRQ frame again
    assert [e.arg for e in pdev.drain_events()[0]] == [0, 1]
    assert pdev.stats.event_frames == frames
    pdev.set_event_post(True)
    card.faults.reset()
    with pytest.raises(CardResetError):
        pdev.read(rm.REG_MAGIC, 4)
    assert card_reg(pdev, rm.REG_EVENT_POST) == 0  # the card forgot, and so did the driver
    events, _ = drain_all(pdev)
    assert [e.code for e in events][:1] == [rm.EV_RESET]
    pdev.set_event_post(True)
    pdev.write(rm.REG_INT_STATUS, u32(rm.INT_RESET) + u32(ALL_IRQS))
    assert drain_all(pdev) == ([], 0)  # events from before posting began: one ring read
    while pdev.wait_irq(0.06) is not None:
        pass
    push_in_one_step(card, 1)
    pdev.wait_irq(1.0)
    tx = pdev.stats.frames_tx
    assert [e.arg for e in pdev.drain_events()[0]] == [0]
    assert pdev.stats.frames_tx == tx


def test_card_keeps_the_cause_when_the_next_call_follows_at_once(
    card: firmware_sim.SimulatedCard,
) -> None:
    """The clearing and the next call in one firmware step: by the time the event thread
    sees the clearing, the cause registers belong to the next call (without posting, its
    cause would be lost)."""
    fw = card.firmware
    with Card.open(card.device_path) as tc:
        fw.set_channel(0, 7, state=rm.ST_IN_PRESENT, direction=rm.DIR_INCOMING, called="42",
                       event=rm.EV_INCOMING)
        channel = tc.wait_for_incoming_call(2)
        assert channel is not None and channel.number == 7

        def clear_then_next_call() -> None:
            fw.channel_update(0, 7, state=rm.ST_IDLE, cause=b"\x82\x91", cause_source=1,
                              event=rm.EV_CLEARED)
            fw.channel_update(0, 7, state=rm.ST_OUT_SETUP, direction=rm.DIR_OUTGOING)

        firmware_sim.firmware.call_on_loop(card.loop, clear_then_next_call)
        assert channel.wait_for_idle(2) is State.IDLE
        assert channel.cause() is Cause.BUSY
        assert (channel.details.raw_cause, channel.details.cause_location) == (17, 2)


# --- the receive path, fuzzed ------------------------------------------------------------


def test_receive_path_and_cause_decoder_under_sanitizers(tmp_path) -> None:
    """cdriver/fuzz_link.c: random byte streams and framed bodies through the deframer and
    the response / IRQ / EVENTS filing, and the cause decoder, with ASan and UBSan."""
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    exe = tmp_path / "fuzz_link"
    sources = [os.path.join(CDRIVER, f) for f in ("fuzz_link.c", "frame.c", "cause.c", "errors.c")]
    build = subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-g", "-O1",
         "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-pthread",
         f"-I{CDRIVER}", *sources, "-o", str(exe)],
        capture_output=True, text=True, timeout=120,
    )
    if build.returncode != 0 and "sanitize" in build.stderr:
        pytest.skip(f"no sanitizer runtime: {build.stderr[-200:]}")
    assert build.returncode == 0, build.stderr
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=1"
    run = subprocess.run([str(exe), "3000", "7"], capture_output=True, text=True, timeout=120,
                         env=env)
    assert run.returncode == 0, run.stderr[-4000:]
    assert "runtime error" not in run.stderr and "Sanitizer" not in run.stderr, run.stderr
    assert run.stdout.startswith("fuzz_link: 3000 inputs")


# --- exactly once under load (datasheet 4.5) ------------------------------------------------


def test_commands_act_exactly_once_under_stalls_drops_and_corruption() -> None:
    """Every bearer channel of 16 E1 spans gets a MAKE_CALL and a RELEASE from its own thread
    while the card stalls three times for 0.6 s, loses frames both ways and corrupts some: the
    card must execute each command exactly once. Seven attempts a request (250 ms x 7): on a
    slow machine (the sanitizers) one request can meet two stalls and a lost frame, past the
    default budget of four; more resends only give the card more copies to recognise."""
    spans = 16
    with firmware_sim.SimulatedCard(
        spans=spans, line="E1", signalling_factory=hook_signalling
    ) as card, Device.open(card.device_path, retries=6) as dev:
        channels = [(s, ts) for s in range(spans) for ts in rm.bearer_timeslots(rm.LINE_E1)]
        start = threading.Barrier(len(channels) + 1)
        failures: list[BaseException] = []

        def call(span: int, ts: int) -> None:
            try:
                start.wait()
                called = f"{span:02d}{ts:02d}"
                assert dev.command(span, ts, rm.CMD_MAKE_CALL, called=called).status == rm.MB_DONE
                dev.write(rm.mbox_reg(span, ts, rm.MBOX_CALLING), called.encode())
                assert dev.command(span, ts, rm.CMD_RELEASE, cause=b"\x80\x90").status == rm.MB_DONE
            except BaseException as exc:  # noqa: BLE001 - reported by the main thread
                failures.append(exc)

        threads = [threading.Thread(target=call, args=c) for c in channels]
        for t in threads:
            t.start()
        start.wait()
        for _ in range(3):
            card.faults.stall(0.6)
            card.faults.drop(5)
            card.faults.corrupt(5)
            card.faults.drop_incoming(5)
            time.sleep(0.9)  # a fault schedule: the next stall after this one ended
        for t in threads:
            t.join(30)
        assert not failures, failures[:3]
        assert dev.stats.retries > 0
        for span in range(spans):
            commands = card.firmware.signalling[span].commands  # type: ignore[attr-defined]
            per_channel: dict[int, list[int]] = {}
            for c in commands:
                per_channel.setdefault(c.timeslot, []).append(c.cmd)
            assert per_channel == {
                ts: [rm.CMD_MAKE_CALL, rm.CMD_RELEASE] for ts in rm.bearer_timeslots(rm.LINE_E1)
            }
        # Stalled requests were resent and the card answered those from its memory.
        assert card.link.rx_duplicates > 0

        def seqs() -> list[int]:
            regs = card.firmware.regs
            return [regs.u32(rm.chan_reg(s, ts, rm.CHAN_SEQ)) for s, ts in channels]

        # Each channel changed exactly twice: OUT_SETUP, then IDLE.
        assert firmware_sim.firmware.call_on_loop(card.loop, seqs) == [2] * len(channels)


def test_identical_writes_each_act_once_when_every_tag_remembers_one(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    """300 byte-identical WRITEs that each run a command: after a full cycle of tags every
    free tag remembers that very request, so the driver first READs on a tag to end its
    memory (datasheet 4.5), and the card executes every one of them."""
    alert = bytes((rm.CMD_ALERT,))  # refused on an idle channel, but always run
    addr = rm.mbox_reg(0, 5, rm.MBOX_CMD)
    tx = dev.stats.frames_tx
    for _ in range(300):
        dev.write(addr, alert)
    events, overflow = dev.drain_events(max=1000)
    done = [e for e in events if e.code == rm.EV_COMMAND_DONE]
    assert len(done) == 300 and not overflow
    assert all(e.arg == rm.MB_ERR_STATE for e in done)
    assert card_reg(dev, rm.REG_LINK_RX_DUPLICATES) == 0
    assert dev.stats.frames_tx - tx >= 300 + 300 - 255  # one READ before each write past 255


def all_at_once(target: Callable[[], None], n: int) -> float:
    """Run `target` on n threads at once; the seconds until the last one ended."""
    threads = [threading.Thread(target=target) for _ in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return time.monotonic() - t0


def test_a_card_working_through_a_queue_gets_no_resends(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    """Datasheet 4.5: 60 reads at once that the card answers one every 10 ms, the last some
    600 ms after it was sent, well past the 250 ms time-out: none is resent, since the card
    kept answering the ones before it."""
    before = dev.stats
    card.faults.slow(0.01, 60)
    values: list[bytes] = []

    def read() -> None:
        values.append(dev.read(rm.REG_MAGIC, 4))

    assert all_at_once(read, 60) > 0.5  # the card did take its time
    assert values == [b"TCRD"] * 60
    assert (dev.stats.retries, dev.stats.timeouts) == (before.retries, before.timeouts)


def test_a_card_working_through_its_backlog_after_a_stall_gets_every_request_done() -> None:
    """Datasheet 4.5 after a stall: 80 reads go out just before a 0.6 s stall and are each
    resent during it; the card loses the first frame of its backlog and takes the rest one
    every 6 ms. The request whose first copy was lost is answered from its second copy,
    which waits behind all 80 first copies, past the 1 s retry budget. The card answered
    requests that were resent after that request's last copy, but their first copies came
    before it: every request waiting is given more time while the card works through
    copies first sent before it, and none times out."""
    values: list[bytes] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            values.append(dev.read(rm.REG_MAGIC, 4))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    with firmware_sim.SimulatedCard(spans=1, line="E1") as card, Device.open(
        card.device_path
    ) as dev:
        card.faults.stall(0.6)
        card.faults.drop_incoming(1)
        card.faults.slow(0.006, 1000)
        took = all_at_once(read, 80)
    assert not errors, errors[:3]
    assert took > 1.0  # the last answer came past the retry budget
    assert values == [b"TCRD"] * 80


def test_identical_commands_each_go_out_once_and_act_once(
    card: firmware_sim.SimulatedCard, dev: Device
) -> None:
    """300 identical COMMANDs on one channel: numbered in turn (datasheet 4.3), none meets a
    tag that remembers it, so each is one frame, with no READ to end a tag's memory, and the
    card executes every one (none is answered as a retry)."""
    tx = dev.stats.frames_tx
    for _ in range(300):
        with pytest.raises(CommandError) as refused:  # ALERT on an idle channel: run, refused
            dev.command(0, 5, Command.ALERT)
        assert refused.value.status == MailboxStatus.WRONG_STATE
    assert dev.stats.frames_tx - tx == 300
    assert card_reg(dev, rm.REG_LINK_RX_DUPLICATES) == 0


@pytest.mark.parametrize("old", [0x0100, 0x0101, 0x0102, 0x0103])
def test_a_card_older_than_1_4_is_refused(monkeypatch: pytest.MonkeyPatch, old: int) -> None:
    """A 1.0 card has no COMMAND request, a 1.1 card refuses numbered ones, a 1.2 card
    has no ACCEPT_BEARERS and ignores MAKE_CALL's plans, presentation and bearer (a withheld
    number would go out allowed), and a 1.3 card's watchdog disarms itself when it expires
    (datasheet 4.5): the driver opens none of them."""
    monkeypatch.setattr(rm, "PROTO_VERSION", old)
    with firmware_sim.SimulatedCard(signalling_factory=hook_signalling) as card:
        with pytest.raises(TelecardError, match="incompatible host-link protocol version"):
            Device.open(card.device_path)
        monkeypatch.setattr(rm, "PROTO_VERSION", 0x0104)
        card.faults.reset()  # boots with the 1.4 version register
        with Device.open(card.device_path) as dev:
            assert dev.info.proto_version == 0x0104
