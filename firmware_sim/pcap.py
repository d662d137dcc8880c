"""pcap writer for D-channel frames, link type LINKTYPE_LINUX_LAPD (177)."""

from __future__ import annotations

import struct
import threading
import time
from pathlib import Path
from typing import BinaryIO

LINKTYPE_LINUX_LAPD = 177
_PKT_RECEIVED = 0
_PKT_SENT = 4
_ETH_P_LAPD = 0x0030
_SNAPLEN = 65535


class PcapWriter:
    """Appends LAPD frames (no FCS) with the 16-byte LINUX_LAPD pseudo-header.

    Several spans (and, back to back, several cards' loops) may share one writer, hence the lock.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: BinaryIO | None = open(self.path, "wb")
        self._lock = threading.Lock()
        self._f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, _SNAPLEN,
                                  LINKTYPE_LINUX_LAPD))
        self._f.flush()
        self.packets = 0

    def write(self, frame: bytes, *, sent: bool, network_side: bool) -> None:
        """Record one frame as seen by the local end (`sent`: it transmitted the frame)."""
        now = time.time()
        sec = int(now)
        pseudo = struct.pack(">HHH8sH", _PKT_SENT if sent else _PKT_RECEIVED, 0, 0,
                             b"\x01" + bytes(7) if network_side else bytes(8), _ETH_P_LAPD)
        n = len(pseudo) + len(frame)
        with self._lock:
            if self._f is None:
                return
            self._f.write(struct.pack("<IIII", sec, int((now - sec) * 1e6), n, n))
            self._f.write(pseudo)
            self._f.write(frame)
            self._f.flush()
            self.packets += 1

    def close(self) -> None:
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None
