"""pcapng writer for D-channel frames: one interface per span, link type LINKTYPE_LINUX_LAPD (177).

Block layout from the IETF draft "PCAP Next Generation (pcapng) Capture File Format": a Section
Header Block, an Interface Description Block per span (written before that span's first frame)
and an Enhanced Packet Block per frame, all little-endian.
"""

from __future__ import annotations

import errno
import os
import stat
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

BLOCK_SHB = 0x0A0D0D0A
BLOCK_IDB = 0x00000001
BLOCK_EPB = 0x00000006
BYTE_ORDER_MAGIC = 0x1A2B3C4D
_OPT_END = 0
_OPT_SHB_USERAPPL = 4
_OPT_IF_NAME = 2
_OPT_IF_DESCRIPTION = 3
_OPT_EPB_FLAGS = 2
#: epb_flags bits 0-1: the frame's direction as seen by the capturing end.
EPB_INBOUND = 1
EPB_OUTBOUND = 2


def _option(code: int, value: bytes) -> bytes:
    return struct.pack("<HH", code, len(value)) + value + bytes(-len(value) % 4)


def _block(block_type: int, body: bytes) -> bytes:
    total = 12 + len(body)
    return struct.pack("<II", block_type, total) + body + struct.pack("<I", total)


def _open_new(path: Path, overwrite: bool) -> BinaryIO:
    """Open `path` for writing without following a symlink at it; unless `overwrite`, only if
    nothing is there yet. Only a regular file is ever written (a FIFO or device is refused)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    flags |= os.O_TRUNC if overwrite else os.O_EXCL
    try:
        fd = os.open(path, flags, 0o644)
    except FileExistsError:
        raise FileExistsError(errno.EEXIST, "capture file exists", str(path)) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "capture path is a symlink", str(path)) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "capture path is not a regular file", str(path))
    os.set_blocking(fd, True)
    return os.fdopen(fd, "wb")


class PcapWriter:
    """Writes LAPD frames (no FCS, behind the 16-byte LINUX_LAPD pseudo-header) to a new
    pcapng file, each on the interface of its span (`span0`, `span1` ...) with its direction.

    Refuses an existing file (FileExistsError) unless `overwrite`, and never follows a symlink
    at `path` (OSError ELOOP). Several spans (and, back to back, several cards' loops) may share
    one writer, hence the lock.
    """

    def __init__(self, path: str | Path, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self._f: BinaryIO | None = _open_new(self.path, overwrite)
        self._lock = threading.Lock()
        self._interfaces: dict[int, int] = {}  # span -> interface id, in order of first frame
        self._f.write(_block(BLOCK_SHB, struct.pack("<IHHq", BYTE_ORDER_MAGIC, 1, 0, -1)
                             + _option(_OPT_SHB_USERAPPL, b"firmware_sim")
                             + _option(_OPT_END, b"")))
        self._f.flush()
        self.packets = 0

    def _interface(self, f: BinaryIO, span: int) -> int:
        iface = self._interfaces.get(span)
        if iface is None:
            iface = self._interfaces[span] = len(self._interfaces)
            f.write(_block(BLOCK_IDB, struct.pack("<HHI", LINKTYPE_LINUX_LAPD, 0, _SNAPLEN)
                           + _option(_OPT_IF_NAME, f"span{span}".encode())
                           + _option(_OPT_IF_DESCRIPTION, f"span {span} D-channel".encode())
                           + _option(_OPT_END, b"")))
        return iface

    def write(self, frame: bytes, *, sent: bool, network_side: bool, span: int = 0) -> None:
        """Record one frame of `span` as seen by the local end (`sent`: it transmitted it)."""
        micros = time.time_ns() // 1000
        packet = struct.pack(">HHH8sH", _PKT_SENT if sent else _PKT_RECEIVED, 0, 0,
                             b"\x01" + bytes(7) if network_side else bytes(8),
                             _ETH_P_LAPD) + frame
        n = len(packet)
        flags = struct.pack("<I", EPB_OUTBOUND if sent else EPB_INBOUND)
        with self._lock:
            f = self._f
            if f is None:
                return
            iface = self._interface(f, span)
            f.write(_block(BLOCK_EPB, struct.pack("<IIIII", iface, micros >> 32,
                                                  micros & 0xFFFFFFFF, n, n)
                           + packet + bytes(-n % 4)
                           + _option(_OPT_EPB_FLAGS, flags) + _option(_OPT_END, b"")))
            f.flush()
            self.packets += 1

    def close(self) -> None:
        """Flush and close the file; later frames are dropped."""
        with self._lock:
            if self._f is not None:
                self._f.close()
                self._f = None
