"""`python -m firmware_sim` with --dchannel, --pcap and --demo-plan, as a rig would run it."""

import os
import signal
import socket
import struct
import subprocess
import sys
from pathlib import Path

from firmware_sim.dchannel import fcs
from firmware_sim.pcap import (
    BLOCK_EPB,
    BLOCK_IDB,
    BLOCK_SHB,
    BYTE_ORDER_MAGIC,
    LINKTYPE_LINUX_LAPD,
)

REPO = Path(__file__).resolve().parent.parent
SABME_P = 0x7F  # SABME with the P bit set: how the user side opens the link


def test_dchannel_socket_and_pcap(tmp_path: Path) -> None:
    listen_path = str(tmp_path / "dchan0")
    pcap_path = tmp_path / "d.pcap"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(listen_path)
    server.listen(1)
    server.settimeout(10)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", "--dchannel", f"0={listen_path}",
         "--pcap", str(pcap_path), "--demo-plan"],
        stdout=subprocess.PIPE, env=env, text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("/dev/pts/")
        peer, _ = server.accept()
        peer.settimeout(10)
        packet = peer.recv(1024)
        frame, check = packet[:-2], packet[-2:]
        # SAPI 0 (C/R = 0 from the user side), TEI 0, SABME: and a real FCS behind it.
        assert frame == bytes([0x00, 0x01, SABME_P])
        assert check == fcs(frame)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        peer.close()
    finally:
        proc.kill()
        proc.wait()
        server.close()
    blocks = pcapng_blocks(pcap_path.read_bytes())
    (kind, shb), (idb_kind, idb) = blocks[0], blocks[1]
    assert (kind, struct.unpack_from("<I", shb)[0]) == (BLOCK_SHB, BYTE_ORDER_MAGIC)
    assert (idb_kind, struct.unpack_from("<H", idb)[0]) == (BLOCK_IDB, LINKTYPE_LINUX_LAPD)
    epb_kind, epb = blocks[2]
    interface, _, _, captured, _ = struct.unpack_from("<IIIII", epb)
    assert (epb_kind, interface) == (BLOCK_EPB, 0)
    first = epb[20 : 20 + captured]
    assert first[16:] == bytes([0x00, 0x01, SABME_P])  # after the 16-byte pseudo-header


def pcapng_blocks(data: bytes) -> list[tuple[int, bytes]]:
    """A pcapng file's blocks: (type, body) each, read by their total lengths."""
    blocks, at = [], 0
    while at < len(data):
        kind, total = struct.unpack_from("<II", data, at)
        blocks.append((kind, data[at + 8 : at + total - 4]))
        at += total
    return blocks


def test_bad_dchannel_argument_is_a_usage_error(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for spec in ("nonsense", f"0={tmp_path / 'nobody-listens'}"):
        proc = subprocess.run(
            [sys.executable, "-m", "firmware_sim", "--dchannel", spec],
            capture_output=True, env=env, text=True, timeout=30,
        )
        assert proc.returncode == 2
        assert "--dchannel" in proc.stderr
