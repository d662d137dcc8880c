"""SimulatedCard: the firmware and host link on their own event loop thread, behind a pty."""

import asyncio
import itertools
import os
import socket
import threading
import tty
from collections.abc import Mapping
from types import TracebackType
from typing import cast

from firmware_sim import regmap as rm
from firmware_sim.faults import Faults
from firmware_sim.firmware import Firmware, SignallingFactory, call_on_loop
from firmware_sim.hookline import HookSignalling, StateSink
from firmware_sim.hostlink import HostLink
from firmware_sim.isdn import build_span_signalling
from firmware_sim.network import NetworkEmulator
from firmware_sim.pcap import PcapWriter
from firmware_sim.signalling import ChannelSink, SpanSignalling

LINES = {"E1": rm.LINE_E1, "T1": rm.LINE_T1}
ROLES = {"TE": rm.ROLE_TE, "NT": rm.ROLE_NT}


def hook_signalling(
    loop: asyncio.AbstractEventLoop, sink: ChannelSink, span: int, line: int, role: int
) -> SpanSignalling:
    """A signalling factory with no D-channel: HookSignalling, for register-level tests."""
    return HookSignalling(loop, cast(StateSink, sink), span, line, role)


class SimulatedCard:
    """A TC-PRI card whose host side is the pty at `device_path`.

    Every span runs Q.921/Q.931 in `role`. Its D-channel goes to the network emulator
    (`.network`, scripted by tests) unless `dchannels` hands it to an external LAPD peer on a
    connected SOCK_SEQPACKET socket (the card owns those sockets and closes them at close()).
    `pcap` records every D-channel frame of every span; `timers` overrides Q.921/Q.931 timer
    values in seconds (e.g. {"T303": 0.2}) on the card, and on the emulator too unless
    `network_timers` gives the emulator its own.
    `signalling_factory(loop, sink, span, line, role)` replaces the ISDN stack altogether
    (line and role as regmap.LINE_* / ROLE_* values); hook_signalling is one.
    `monitor_ports` read-only monitor ports (datasheet 4.6) are served beside the control port,
    each on a pty of its own: `monitor_paths[n - 1]` is monitor port n.

    The card keeps its own slave fd open so the pty never hangs up while the host closes and
    reopens it (a master with no slave open reads EIO). Side effect: a TIOCEXCL set by the host
    outlives its close, so a non-root host should lock with flock rather than TIOCEXCL.
    """

    def __init__(
        self,
        spans: int = 1,
        line: str = "E1",
        *,
        role: str = "TE",
        dchannels: Mapping[int, socket.socket] | None = None,
        pcap: str | os.PathLike[str] | None = None,
        timers: Mapping[str, float] | None = None,
        network_timers: Mapping[str, float] | None = None,
        signalling_factory: SignallingFactory | None = None,
        monitor_ports: int = 0,
    ) -> None:
        if isinstance(spans, bool) or not isinstance(spans, int):
            raise ValueError(f"spans must be an int, not {spans!r}")
        if not 1 <= spans <= rm.MAX_SPANS:
            raise ValueError(f"spans must be 1-{rm.MAX_SPANS}, not {spans}")
        if line not in LINES:
            raise ValueError(f"line must be 'E1' or 'T1', not {line!r}")
        if role not in ROLES:
            raise ValueError(f"role must be 'TE' or 'NT', not {role!r}")
        ports = range(rm.MAX_MONITOR_PORTS + 1)
        if not isinstance(monitor_ports, int) or isinstance(monitor_ports, bool) or (
            monitor_ports not in ports
        ):
            raise ValueError(f"monitor_ports must be 0-{ports[-1]}, not {monitor_ports!r}")
        self._dchannels = dict(dchannels or {})
        for span_index in self._dchannels:
            if not 0 <= span_index < spans:
                raise ValueError(f"dchannels names span {span_index}; the card has 0-{spans - 1}")
        self.spans = spans
        self.line = line
        self.role = role
        self._timers = dict(timers) if timers is not None else None
        #: The far end of every span not handed to an external D-channel, for tests to script.
        self.network = NetworkEmulator(
            timers=self._timers if network_timers is None else dict(network_timers)
        )
        self._pcap = PcapWriter(os.fspath(pcap)) if pcap is not None else None
        self._signalling_factory = signalling_factory or self._isdn_signalling
        self._closed = False
        #: The monitor ports' links (a test may stall one, as a host that stopped reading).
        self.monitors: list[HostLink] = []
        self.loop = asyncio.new_event_loop()
        ptys = [_raw_pty() for _ in range(1 + monitor_ports)]
        #: The pty the host opens, as it would the card's character device.
        self.device_path = os.ttyname(ptys[0][1])
        #: The monitor ports' ptys, for observers (datasheet 4.6): monitor port n is [n - 1].
        self.monitor_paths = tuple(os.ttyname(slave) for _, slave in ptys[1:])
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=f"card {self.device_path}", daemon=True
        )
        self._thread.start()
        try:
            self.firmware, self.link = call_on_loop(self.loop, self._start, ptys)
        except BaseException:
            for fd in itertools.chain.from_iterable(ptys):
                os.close(fd)
            self._stop_loop()
            raise
        #: Misbehaviour of the host link and firmware, on demand.
        self.faults = Faults(self.link, self.firmware)

    def _isdn_signalling(
        self, loop: asyncio.AbstractEventLoop, sink: ChannelSink, span: int, line: int, role: int
    ) -> SpanSignalling:
        sock = self._dchannels.get(span)
        return build_span_signalling(
            loop,
            sink,
            span,
            line,
            role,
            network=self.network if sock is None else None,
            dchannel_socket=sock,
            pcap=self._pcap,
            timers=self._timers,
        )

    def _start(self, ptys: list[tuple[int, int]]) -> tuple[Firmware, HostLink]:
        firmware = Firmware(
            self.loop, self.spans, LINES[self.line], ROLES[self.role], self._signalling_factory
        )
        links = [
            HostLink(self.loop, master, slave, firmware, port)
            for port, (master, slave) in enumerate(ptys)
        ]
        firmware.link = links[0]
        firmware.monitors = list(links[1:])
        self.monitors = links[1:]
        firmware.boot()
        for link in links:
            link.start()
        return firmware, links[0]

    def _stop(self) -> None:
        self.firmware.shutdown()
        self.network.stop()
        self.link.close()
        for monitor in self.monitors:
            monitor.close()
        for sock in self._dchannels.values():
            sock.close()
        if self._pcap is not None:
            self._pcap.close()

    def _stop_loop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()

    def close(self) -> None:
        """Stop the firmware, close the pty (the host sees a hangup) and end the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            call_on_loop(self.loop, self._stop)
        finally:
            self._stop_loop()

    def __enter__(self) -> "SimulatedCard":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _raw_pty() -> tuple[int, int]:
    """A pty (master, slave) in raw mode: cooked mode would echo and mangle frames before the
    host opens it."""
    master, slave = os.openpty()
    tty.setraw(slave)
    return master, slave
