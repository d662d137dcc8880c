"""SimulatedCard: the firmware and host link on their own event loop thread, behind a pty."""

import asyncio
import os
import threading
import tty
from types import TracebackType
from typing import cast

from firmware_sim import regmap as rm
from firmware_sim.faults import Faults
from firmware_sim.firmware import Firmware, SignallingFactory, call_on_loop
from firmware_sim.hookline import HookSignalling, StateSink
from firmware_sim.hostlink import HostLink
from firmware_sim.signalling import ChannelSink, SpanSignalling

LINES = {"E1": rm.LINE_E1, "T1": rm.LINE_T1}
ROLES = {"TE": rm.ROLE_TE, "NT": rm.ROLE_NT}


def hook_signalling(
    loop: asyncio.AbstractEventLoop, sink: ChannelSink, span: int, line: int, role: int
) -> SpanSignalling:
    """The default signalling factory: HookSignalling (needs the Firmware as its sink)."""
    return HookSignalling(loop, cast(StateSink, sink), span, line, role)


class SimulatedCard:
    """A TC-PRI card whose host side is the pty at `device_path`.

    The card keeps its own slave fd open so the pty never hangs up while the host closes and
    reopens it (a master with no slave open reads EIO). Side effect: a TIOCEXCL set by the host
    outlives its close, so a non-root host should lock with flock rather than TIOCEXCL.

    signalling_factory(loop, sink, span, line, role) builds each span's SpanSignalling;
    line and role are passed as regmap.LINE_* and regmap.ROLE_* values.
    """

    def __init__(
        self,
        spans: int = 1,
        line: str = "E1",
        *,
        role: str = "TE",
        signalling_factory: SignallingFactory | None = None,
    ) -> None:
        if isinstance(spans, bool) or not isinstance(spans, int):
            raise ValueError(f"spans must be an int, not {spans!r}")
        if not 1 <= spans <= rm.MAX_SPANS:
            raise ValueError(f"spans must be 1-{rm.MAX_SPANS}, not {spans}")
        if line not in LINES:
            raise ValueError(f"line must be 'E1' or 'T1', not {line!r}")
        if role not in ROLES:
            raise ValueError(f"role must be 'TE' or 'NT', not {role!r}")
        self.spans = spans
        self.line = line
        self.role = role
        self._signalling_factory = signalling_factory or hook_signalling
        self._closed = False
        self.loop = asyncio.new_event_loop()
        master, slave = os.openpty()
        tty.setraw(slave)  # cooked mode would echo and mangle frames before the host opens
        self.device_path = os.ttyname(slave)
        self._thread = threading.Thread(
            target=self.loop.run_forever, name=f"card {self.device_path}", daemon=True
        )
        self._thread.start()
        try:
            self.firmware, self.link = call_on_loop(self.loop, self._start, master, slave)
        except BaseException:
            os.close(master)
            os.close(slave)
            self._stop_loop()
            raise
        self.faults = Faults(self.link, self.firmware)

    def _start(self, master: int, slave: int) -> tuple[Firmware, HostLink]:
        firmware = Firmware(
            self.loop, self.spans, LINES[self.line], ROLES[self.role], self._signalling_factory
        )
        link = HostLink(self.loop, master, slave, firmware)
        firmware.link = link
        firmware.boot()
        link.start()
        return firmware, link

    def _stop(self) -> None:
        self.firmware.shutdown()
        self.link.close()

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
