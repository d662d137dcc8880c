"""Builds the ISDN signalling behind one span of the simulated card (the firmware's entry point)."""

from __future__ import annotations

import asyncio
import socket

from .callcontrol import CardSignalling
from .dchannel import SeqpacketTransport, Tap, back_to_back, connect_seqpacket
from .network import NetworkEmulator
from .pcap import PcapWriter
from .regmap import ROLE_NT
from .signalling import ChannelSink

__all__ = ["build_span_signalling", "back_to_back", "connect_seqpacket", "CardSignalling"]


def build_span_signalling(
    loop: asyncio.AbstractEventLoop,
    sink: ChannelSink,
    span: int,
    line: int,
    role: int,
    *,
    network: NetworkEmulator | None = None,
    dchannel_socket: socket.socket | None = None,
    pcap: PcapWriter | None = None,
    timers: dict[str, float] | None = None,
) -> CardSignalling:
    """The span's SpanSignalling, with its D-channel cabled to, in order of precedence:
    `dchannel_socket` (an external LAPD peer on a connected SOCK_SEQPACKET socket, e.g. from
    back_to_back() or connect_seqpacket(path)), the `network` emulator, or nothing (the link
    stays down). `pcap` records every frame of the span; `timers` overrides Q.931
    (callcontrol.TIMERS: T301 ... T316) and Q.921 (T200, T203) timer values in seconds. Call on
    the loop thread.
    """
    tap = Tap(pcap, role == ROLE_NT, span) if pcap is not None else None
    if dchannel_socket is not None:
        transport: object = SeqpacketTransport(loop, dchannel_socket, tap)
    elif network is not None:
        end = network.attach(loop, span, line, role)
        end.tap = tap
        transport = end
    else:
        transport = None
    return CardSignalling(loop, sink, span, line, role, transport, timers=timers)
