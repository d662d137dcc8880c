"""Fault injection on a running simulated card; every method may be called from any thread."""

from firmware_sim.firmware import Firmware, call_on_loop
from firmware_sim.hostlink import HostLink


class Faults:
    """Misbehaviour of the card's host link and firmware, on demand."""

    def __init__(self, link: HostLink, firmware: Firmware) -> None:
        self._link = link
        self._fw = firmware

    def corrupt(self, n: int = 1) -> None:
        """Flip a byte (so the CRC fails) in each of the next n frames the card sends."""
        call_on_loop(self._fw.loop, self._add, "corrupt_tx", n)

    def drop(self, n: int = 1) -> None:
        """Lose the next n frames the card sends."""
        call_on_loop(self._fw.loop, self._add, "drop_tx", n)

    def drop_incoming(self, n: int = 1) -> None:
        """Lose the next n good frames the host sends (they are neither counted nor seen)."""
        call_on_loop(self._fw.loop, self._add, "drop_rx", n)

    def garbage(self, data: bytes) -> None:
        """Send raw bytes to the host, unframed."""
        call_on_loop(self._fw.loop, self._link.transmit, bytes(data))

    def slow(self, seconds: float, n: int = 1) -> None:
        """Take the next n frames from the host one every `seconds` (the others wait, in
        order): a card working through a queue of requests, answering as it goes."""
        if seconds < 0 or n < 0:
            raise ValueError("seconds and n must be >= 0")
        call_on_loop(self._fw.loop, self._slow, seconds, n)

    def _slow(self, seconds: float, n: int) -> None:
        self._link.slow_interval = seconds
        self._link.slow_frames += n

    def stall(self, seconds: float) -> None:
        """Neither read requests nor send anything for `seconds`."""
        call_on_loop(self._fw.loop, self._link.stall, seconds)

    def vanish(self) -> None:
        """Close the pty master: the host sees EIO / POLLHUP, as when a USB card is pulled."""
        call_on_loop(self._fw.loop, self._link.close)

    def reset(self) -> None:
        """Reboot the firmware."""
        self._fw.reset()

    def _add(self, counter: str, n: int) -> None:
        if n < 0:
            raise ValueError("n must be >= 0")
        setattr(self._link, counter, getattr(self._link, counter) + n)
