"""The demo numbering plan of `telecard call` on its embedded simulated card.

| number | the network emulator                          | telecard call reports |
|--------|-----------------------------------------------|-----------------------|
| 3301   | clears with cause 17 (user busy)              | BUSY                  |
| 3302   | answers (the CLI hangs up after a short hold) | NORMAL                |
| 3303   | alerts and never answers                      | TIMEOUT (--timeout)   |
| 3304   | clears with cause 42 (switching congestion)   | CONGESTION            |
| other  | clears with cause 1 (unallocated number)      | UNOBTAINABLE          |
"""

from __future__ import annotations

import asyncio

from firmware_sim.callcontrol import CardSignalling
from firmware_sim.card import SimulatedCard
from firmware_sim.network import Answer, Busy, Congestion, NetworkEmulator, NoAnswer, Outcome
from firmware_sim.signalling import ChannelSink, SpanSignalling

DEMO_PLAN: dict[str, Outcome] = {
    "3301": Busy(),
    "3302": Answer(),
    "3303": NoAnswer(),
    "3304": Congestion(),
}


def install(network: NetworkEmulator) -> None:
    """Route the demo numbers on a card's network emulator (unrouted numbers get cause 1)."""
    for number, outcome in DEMO_PLAN.items():
        network.route(number, outcome)


class NetworkedCard(SimulatedCard):
    """A SimulatedCard whose spans run Q.931 against the network emulator `network`."""

    def __init__(
        self,
        spans: int = 1,
        line: str = "E1",
        *,
        role: str = "TE",
        timers: dict[str, float] | None = None,
        network_timers: dict[str, float] | None = None,
    ) -> None:
        """`timers` override the card's Q.931 timers, `network_timers` the far end's
        (default: the same as the card's)."""
        self.network = NetworkEmulator(
            timers=timers if network_timers is None else network_timers
        )

        def signalling(
            loop: asyncio.AbstractEventLoop, sink: ChannelSink, span: int, line: int, role: int
        ) -> SpanSignalling:
            end = self.network.attach(loop, span, line, role)
            return CardSignalling(loop, sink, span, line, role, end, timers=timers)

        super().__init__(spans, line, role=role, signalling_factory=signalling)


def simulated_card(
    spans: int = 1,
    line: str = "E1",
    *,
    timers: dict[str, float] | None = None,
    network_timers: dict[str, float] | None = None,
) -> NetworkedCard:
    """A user-side simulated card whose network emulator follows the demo plan."""
    card = NetworkedCard(spans, line, timers=timers, network_timers=network_timers)
    install(card.network)
    return card
