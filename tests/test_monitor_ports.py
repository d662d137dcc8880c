"""Monitor ports (datasheet 4.6): observers watch the card beside its controller, read-only.

The card level speaks the link protocol by hand (tests/linkproto.py); the API level opens
Cards with observe=True; the last test runs the card, an application, `telecard monitor` and
`telecard status` as processes of their own, as a rig would."""

from __future__ import annotations

import contextlib
import json
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_sim import SimulatedCard, hostlink
from firmware_sim import regmap as rm
from firmware_sim.card import hook_signalling
from firmware_sim.demo_plan import install
from firmware_sim.firmware import call_on_loop
from firmware_sim.hostlink import MONITOR_OUT_LIMIT
from telecard import (
    Card,
    CardResetError,
    Cause,
    DeviceBusyError,
    ObserverError,
    ProtocolError,
    State,
    WrongPortError,
)
from telecard import cli as telecard_cli
from telecard._cdriver import lib
from telecard.device import Device
from tests.conftest import free, python, subprocess_env, wait_for
from tests.linkproto import Link

TELECARD = [sys.executable, "-m", "telecard.cli"]
_PORT_REGS = range(rm.REG_LINK_RX_FRAMES, rm.REG_MONITOR_DROPPED + 4)  # each port's own


def observer_hello(link: Link, session: int = rm.SESSION_OBSERVER) -> tuple[int, bytes]:
    """(status, the response payload after the status) of a HELLO asking for `session`."""
    resp = link.request(
        struct.pack("<BBHB", rm.T_HELLO, link.next_tag(), rm.PROTO_VERSION, session)
    )
    return resp[2], resp[3:]


def registers(link: Link) -> bytes:
    """The whole register space but the reading port's own registers."""
    space = bytearray()
    for addr in range(0, rm.REG_SPACE_SIZE, rm.MAX_DATA):
        space += link.read(addr, min(rm.MAX_DATA, rm.REG_SPACE_SIZE - addr))
    space[_PORT_REGS.start : _PORT_REGS.stop] = bytes(len(_PORT_REGS))
    return bytes(space)


def events_frames(link: Link, timeout: float = 0.3) -> list[tuple[int, int]]:
    """(first index, count) of each EVENTS frame until `timeout` passes without a frame."""
    frames = []
    while (body := link.recv_frame(timeout)) is not None:
        if body[0] == rm.T_EVENTS:
            first, count = struct.unpack_from("<IB", body, 2)
            frames.append((first, count))
    return frames


@pytest.fixture
def hook_card() -> Iterator[SimulatedCard]:
    """A card with one monitor port and no ISDN stack: nothing changes unless told to."""
    with SimulatedCard(signalling_factory=hook_signalling, monitor_ports=1) as card:
        yield card


@pytest.fixture
def isdn_card() -> Iterator[SimulatedCard]:
    """A demo-plan card with two monitor ports."""
    with SimulatedCard(monitor_ports=2) as card:
        install(card.network)
        yield card


# -- the card -----------------------------------------------------------------------------


def test_a_monitor_port_serves_reads_and_refuses_every_change(hook_card: SimulatedCard) -> None:
    mbox = rm.mbox_reg(0, 1, 0)
    make_call = bytes((rm.CMD_MAKE_CALL,)) + bytes(rm.MBOX_CALLED_LEN - 1) + b"\x04\x00"
    make_call += bytes(rm.MBOX_CALLED - len(make_call)) + b"3302"
    with Link(hook_card.device_path) as control, Link(hook_card.monitor_paths[0]) as watch:
        assert control.hello()[0] == rm.S_OK
        assert control.write_u32(rm.REG_HOST_WATCHDOG, 5000) == rm.S_OK
        assert watch.write_u32(rm.REG_INT_MASK, 1) == rm.S_OBSERVER  # before its HELLO too
        status, rest = observer_hello(watch)
        assert status == rm.S_OK
        assert struct.unpack_from("<I", rest, 10)[0] == control.u32(rm.RING_HEAD)
        assert (watch.u8(rm.REG_LINK_PORT), control.u8(rm.REG_LINK_PORT)) == (1, 0)
        assert watch.u8(rm.REG_MONITOR_PORTS) == 1
        before = registers(control)
        assert registers(watch) == before  # the same card, read through either port
        for addr, data in [
            (rm.REG_INT_STATUS, struct.pack("<I", rm.INT_RESET)),
            (rm.REG_INT_MASK, struct.pack("<I", 0xF)),
            (rm.REG_CARD_CONTROL, struct.pack("<I", rm.CTRL_SOFT_RESET)),
            (rm.REG_EVENT_POST, struct.pack("<I", rm.POST_ENABLE | rm.POST_AUTO_ACK)),
            (rm.RING_TAIL, control.read(rm.RING_HEAD, 4)),
            (rm.RING_OVERFLOW, struct.pack("<I", 1)),
            (rm.REG_HOST_WATCHDOG, struct.pack("<I", 0)),
            (rm.REG_MAGIC, b"\0"),
            (mbox, make_call),
        ]:
            assert watch.write(addr, data) == rm.S_OBSERVER, hex(addr)
        for cmd in (rm.CMD_MAKE_CALL, rm.CMD_RESERVE, rm.CMD_RELEASE):
            assert watch.command(1, bytes((cmd,)) + make_call[1:])[0] == rm.S_OBSERVER
        assert watch.command(1, bytes((rm.CMD_RESERVE,)))[0] == rm.S_OBSERVER  # resent: again
        assert registers(control) == before
        assert hook_card.firmware.boot_id == control.hello()[3]  # no SOFT_RESET took
        assert control.u32(rm.REG_LINK_RX_DUPLICATES) == 0


def test_a_hello_for_the_wrong_port_changes_nothing(hook_card: SimulatedCard) -> None:
    owner = rm.chan_reg(0, 3, rm.CHAN_OWNER)
    with Link(hook_card.device_path) as control, Link(hook_card.monitor_paths[0]) as watch:
        assert control.hello()[0] == rm.S_OK
        reserve = struct.pack("<BBHB", rm.T_COMMAND, 200, 3, rm.CMD_RESERVE)
        answer = control.request(reserve)
        assert answer[2:4] == bytes((rm.S_OK, rm.MB_DONE))
        # An observer never takes the control port: refused, and the controller's session,
        # its reservations and its tag memory stay (the RESERVE resent is a retry).
        assert observer_hello(control)[0] == rm.S_WRONG_PORT
        assert control.u8(owner) == rm.OWNER_HOST
        assert control.request(reserve) == answer
        assert control.u32(rm.REG_LINK_RX_DUPLICATES) == 1
        # A controller never mistakes a monitor port for the card: no session opens there.
        assert watch.hello()[0] == rm.S_WRONG_PORT
        assert observer_hello(watch, rm.SESSION_CONTROLLER)[0] == rm.S_WRONG_PORT
        assert watch.read_status(rm.REG_MAGIC, 4)[0] == rm.S_NOT_READY
        assert observer_hello(watch, 7)[0] == rm.S_BAD_VALUE


def test_an_observer_gets_every_event_and_takes_none(hook_card: SimulatedCard) -> None:
    fw = hook_card.firmware
    with Link(hook_card.device_path) as control, Link(hook_card.monitor_paths[0]) as watch:
        assert control.hello()[0] == rm.S_OK
        first = struct.unpack_from("<I", observer_hello(watch)[1], 10)[0]
        fw.set_channel(0, 1, state=rm.ST_ACTIVE)  # the controller posts nothing: still sent
        fw.set_channel(0, 1, state=rm.ST_IDLE, cause=b"\x80\x90", event=rm.EV_CLEARED)
        assert events_frames(watch) == [(first, 1), (first + 1, 1)]
        assert control.u32(rm.RING_TAIL) == 0  # the ring is the controller's to consume
        assert control.write_u32(rm.REG_EVENT_POST, rm.POST_ENABLE | rm.POST_AUTO_ACK) == 0
        fw.set_channel(0, 2, state=rm.ST_ACTIVE)
        assert events_frames(control) == events_frames(watch) == [(first + 2, 1)]
        assert control.u32(rm.RING_TAIL) == first + 3  # acknowledged for the controller


def test_a_stalled_observer_costs_the_controller_nothing(hook_card: SimulatedCard) -> None:
    """An observer that never reads: its port drops its own events past its bounded buffer;
    the controller gets every event, without a timeout or a ring overflow."""
    fw = hook_card.firmware
    # Past its buffer and what the kernel holds for a pty nobody reads (some 64 KiB more).
    clears = 4 * MONITOR_OUT_LIMIT // (rm.EVENT_SIZE + 1 + rm.POST_SNAPSHOT_LEN)
    with Device.open(hook_card.device_path) as dev, Link(hook_card.monitor_paths[0]) as watch:
        dev.set_event_post(True)
        assert observer_hello(watch)[0] == rm.S_OK
        got = 0
        for n in range(clears):
            fw.set_channel(0, 1 + n % 15, state=rm.ST_IDLE, event=rm.EV_CLEARED)
            events, overflow = dev.drain_events()
            assert not overflow
            got += sum(e.code == rm.EV_CLEARED for e in events)
        while got < clears:
            dev.wait_events(1.0)
            events, overflow = dev.drain_events()
            assert not overflow
            got += sum(e.code == rm.EV_CLEARED for e in events)
        assert got == clears and dev.stats.timeouts == 0 and dev.stats.events_dropped == 0
        # The observer comes back: it finds what its buffer held, and the count of the rest.
        received = sum(count for _, count in events_frames(watch, 0.2))
        dropped = int.from_bytes(watch.read(rm.REG_MONITOR_DROPPED, 4), "little")
        assert dropped > 0 and received > 0 and received + dropped == clears


def test_an_observer_reads_what_its_port_dropped_from_the_ring(hook_card: SimulatedCard) -> None:
    """The driver of an observer that fell behind finds the events its port could not post in
    the ring, reading only (a write would raise ObserverError), and loses none of them."""
    fw = hook_card.firmware
    clears = 900  # twice what the port's buffer holds; the ring holds them all
    # Waits that outlast the stall below: the observer's requests are answered after it.
    with Device.open(hook_card.monitor_paths[0], observe=True, timeout=0.5, retries=5) as watch:
        # The port sends nothing for a while, as if its host had stopped reading.
        call_on_loop(hook_card.loop, hook_card.monitors[0].stall, 1.5)
        for n in range(clears):
            fw.set_channel(0, 1 + n % 15, state=rm.ST_IDLE, event=rm.EV_CLEARED)
        got = 0
        while got < clears:
            watch.wait_events(0.2)  # an idle wait: the drain after it reads RING_HEAD
            events, overflow = watch.drain_events()
            assert not overflow
            got += sum(e.code == rm.EV_CLEARED for e in events)
        assert got == clears and watch.stats.timeouts == 0
        assert 0 < int.from_bytes(watch.read(rm.REG_MONITOR_DROPPED, 4), "little") < clears


def test_an_observer_does_not_feed_the_watchdog(hook_card: SimulatedCard) -> None:
    with Link(hook_card.device_path) as control, Link(hook_card.monitor_paths[0]) as watch:
        assert control.hello()[0] == rm.S_OK
        assert observer_hello(watch)[0] == rm.S_OK
        assert control.write_u32(rm.REG_HOST_WATCHDOG, 200) == rm.S_OK
        # the controller goes silent; the observer keeps asking, which must not feed it
        wait_for(lambda: watch.u32(rm.REG_INT_STATUS) & rm.INT_WATCHDOG, 3, "the watchdog")
        assert watch.u32(rm.REG_HOST_WATCHDOG) == 200  # expired, still armed (2.6)
        # ... nor start its count again after the expiry: no second WATCHDOG event
        head = watch.u32(rm.RING_HEAD)
        end = time.monotonic() + 0.8  # four grace periods
        while time.monotonic() < end:
            assert watch.u32(rm.RING_HEAD) == head
            time.sleep(0.02)


# -- the API ------------------------------------------------------------------------------


def test_an_observing_card_watches_and_refuses_to_act(isdn_card: SimulatedCard) -> None:
    with Card.open(isdn_card.device_path, watchdog=5) as tc:
        out = free(tc)
        assert out.call("3302") is State.ANSWERED
        with Card.open(isdn_card.monitor_paths[0], observe=True) as watch, watch.events() as ev:
            assert watch.observer and watch.device.observer
            seen = watch.channel(0, out.number)
            assert seen.state() is State.ANSWERED and seen.details.call_to == "3302"
            with pytest.raises(ObserverError, match="open to observe"):
                watch.free_channel()
            with pytest.raises(ObserverError):
                watch.wait_for_incoming_call(0)
            with pytest.raises(ObserverError):
                watch.channel(0, out.number + 1).call("3302")
            with pytest.raises(ObserverError, match="OBSERVER"):
                watch.device.write(lib.TC_REG_HOST_WATCHDOG, bytes(4))
            with pytest.raises(ObserverError):
                watch.device.set_event_post(False)
            assert out.hang_up() is State.IDLE
            cleared = ev.get(timeout=5)
            while cleared is not None and cleared.code.name != "CLEARED":
                cleared = ev.get(timeout=5)
            assert cleared is not None and cleared.cause is Cause.NORMAL
        # The observer went: the controller's watchdog, calls and session are as they were.
        assert out.call("3302") is State.ANSWERED
        assert tc.device.read(lib.TC_REG_HOST_WATCHDOG, 4) == (5000).to_bytes(4, "little")
        with Card.open(isdn_card.monitor_paths[1], observe=True):
            pass  # closing an observer clears no call
        assert out.state() is State.ANSWERED
        assert not isdn_card.network.received[-1].result.cleared


def test_an_observer_catches_up_with_calls_made_while_the_card_rebooted(
    isdn_card: SimulatedCard,
) -> None:
    """A reboot ends the observer's session; its driver opens a new one when it next asks,
    and events reach it from that HELLO on (datasheet 4.6). A call the controller placed
    meanwhile shows on the observer's channel at once (read from the registers), not as IDLE
    until that channel's next event."""
    with Card.open(isdn_card.device_path) as tc, Card.open(
        isdn_card.monitor_paths[0], observe=True
    ) as watch:
        # The observer hears of the reboot only once its port answers again: after the call.
        call_on_loop(isdn_card.loop, isdn_card.monitors[0].stall, 0.5)
        tc.device.write(lib.TC_REG_CARD_CONTROL, lib.TC_CTRL_SOFT_RESET.to_bytes(4, "little"))
        with contextlib.suppress(CardResetError):  # how the controller learns of it
            tc.free_channel()
        out = free(tc)
        assert out.call("3302") is State.ANSWERED
        seen = watch.channel(0, out.number)
        wait_for(lambda: seen.state() is State.ANSWERED, 3, "the observer to see the call")
        assert seen.details.call_to == "3302"


def test_each_port_takes_its_own_kind_of_open(isdn_card: SimulatedCard, tmp_path: Path) -> None:
    with pytest.raises(WrongPortError, match="monitor ports"):
        Card.open(isdn_card.monitor_paths[0])
    with pytest.raises(WrongPortError, match="control port"):
        Card.open(isdn_card.device_path, observe=True)
    link = tmp_path / "card"
    link.symlink_to(isdn_card.device_path)
    for port, path in enumerate(isdn_card.monitor_paths, 1):
        Path(f"{link}.monitor{port}").symlink_to(path)
    with Card.open(link) as tc:
        with pytest.raises(DeviceBusyError, match="one controller at a time"):
            Card.open(link)
        with Card.open(link, observe=True) as one, Card.open(link, observe=True) as two:
            assert {one.device.path, two.device.path} == {f"{link}.monitor1", f"{link}.monitor2"}
            with pytest.raises(DeviceBusyError, match="every monitor port"):
                Card.open(link, observe=True)
        assert free(tc).call("3301") is State.IDLE


def test_status_and_monitor_refuse_a_card_older_than_1_3_clearly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1.2 card serves no monitor port and answers the observer's three-byte HELLO with
    BAD_LENGTH (datasheet 4.6), and the driver takes no 1.2 card as controller either (4.5:
    it would drop the 1.3 call fields), so `telecard status` and `monitor` say so and exit
    DEVICE rather than fail some other way."""
    hello_status = hostlink._hello_status

    def hello_of_1_2(hello: bytes) -> int:
        """Type, tag and the version only: a session byte is a bad length."""
        return rm.S_BAD_LENGTH if len(hello) != 4 else hello_status(hello)

    monkeypatch.setattr(rm, "PROTO_VERSION", 0x0102)
    monkeypatch.setattr(hostlink, "_session", lambda hello: rm.SESSION_CONTROLLER)
    monkeypatch.setattr(hostlink, "_hello_status", hello_of_1_2)
    with SimulatedCard() as card:
        with pytest.raises(ProtocolError, match="incompatible"):
            Card.open(card.device_path, observe=True)
        for command in (["status", "--json"], ["monitor", "--seconds", "0.1"]):
            status = telecard_cli.main([*command, "--device", card.device_path])
            assert status == telecard_cli.ExitStatus.DEVICE
            assert "incompatible" in capsys.readouterr().err


# -- processes ----------------------------------------------------------------------------

APPLICATION = """
import sys
from telecard import Card
with Card.open(sys.argv[1]) as card:
    for number in ("3301", "3304", "3302"):
        channel = card.free_channel()
        channel.call(number)
        print(number, channel.state().name, flush=True)
        if number == "3302":
            sys.stdin.readline()  # holds the answered call while `telecard status` looks
            channel.hang_up()
        channel.release()
print("done", flush=True)
"""


def test_monitor_and_status_beside_the_application(tmp_path: Path) -> None:
    link = tmp_path / "card"
    env = subprocess_env()
    sim = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--demo-plan", "--link", str(link)],
        stdout=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    monitor = None
    try:
        assert sim.stdout is not None
        ports = [sim.stdout.readline().strip() for _ in range(3)]
        assert [str(Path(f"{link}.monitor{n}").resolve()) for n in (1, 2)] == ports[1:]
        monitor = subprocess.Popen(
            [*TELECARD, "monitor", "--device", str(link), "--json"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        wait_for(lambda: any(_holds(monitor.pid, ports[1])), 20, "the monitor's open")
        app = python(APPLICATION, str(link))
        assert app.stdin is not None and app.stdout is not None
        try:
            assert [app.stdout.readline().split() for _ in range(3)] == [
                ["3301", "IDLE"],
                ["3304", "IDLE"],
                ["3302", "ANSWERED"],
            ]
            with pytest.raises(DeviceBusyError, match="one controller at a time"):
                Card.open(link)  # a second controller, while the application drives the card
            status = subprocess.run(
                [*TELECARD, "status", "--device", str(link), "--json"],
                capture_output=True, text=True, env=env, timeout=30, check=False,
            )  # fmt: skip
            assert status.returncode == 0, status.stderr
            (call,) = json.loads(status.stdout)["spans"][0]["calls"]
            assert call["call_to"] == "3302" and call["state"] == "ANSWERED"
            app.stdin.write("\n")
            app.stdin.flush()
            assert app.stdout.readline().strip() == "done"
            assert app.wait(timeout=20) == 0
        finally:
            app.kill()
            app.wait()
        assert monitor.stdout is not None
        causes = []
        while len(causes) < 3:
            record = json.loads(monitor.stdout.readline())
            if record["event"] == "CLEARED":
                causes.append((record["call_to"], record["cause"], record["raw_cause"]))
        assert causes == [("3301", "BUSY", 17), ("3304", "CONGESTION", 42), ("3302", "NORMAL", 16)]
    finally:
        if monitor is not None:
            monitor.kill()
            monitor.wait()
        sim.terminate()
        assert sim.wait(timeout=10) == 0


def _holds(pid: int, device: str) -> Iterator[bool]:
    """For each fd of process `pid`: whether it is `device`."""
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            yield str(fd.readlink()) == device
        except OSError:
            continue
