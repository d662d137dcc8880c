"""tests/peers/libpri_peer.c as a process: libpri as the network side of one E1 span.

Built once per session against the system libpri; driven by its line protocol (see the C file).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
from pathlib import Path

import pytest

SOURCE = Path(__file__).parent / "peers" / "libpri_peer.c"
HAVE_LIBPRI = Path("/usr/include/libpri.h").exists() and shutil.which("cc") is not None
needs_libpri = [
    pytest.mark.libpri,
    pytest.mark.skipif(
        not HAVE_LIBPRI, reason="libpri.h (Debian libpri-dev) or a C compiler is missing"
    ),
]


def build(directory: Path) -> Path:
    exe = directory / "libpri_peer"
    subprocess.run(["cc", "-O2", "-Wall", "-o", str(exe), str(SOURCE), "-lpri"], check=True)
    return exe


class LibpriProcess:
    """The running peer; `card_sock` is the card's end of its D-channel socketpair."""

    def __init__(self, exe: Path) -> None:
        self.card_sock, peer_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [str(exe), str(peer_sock.fileno())],
            pass_fds=(peer_sock.fileno(),),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        peer_sock.close()
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def seen(self, prefix: str) -> str | None:
        """The first line the peer printed that starts with `prefix`, if any yet."""
        return next((line for line in list(self.lines) if line.startswith(prefix)), None)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()
        self.card_sock.close()
