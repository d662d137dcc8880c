"""The demo numbering plan of `telecard call` on its embedded simulated card.

======  =============================================  =====================
number  the network emulator                           telecard call reports
======  =============================================  =====================
3301    clears with cause 17 (user busy)               BUSY
3302    answers (the CLI hangs up after a short hold)  NORMAL
3303    alerts and never answers                       TIMEOUT (--timeout)
3304    clears with cause 42 (switching congestion)    CONGESTION
other   clears with cause 1 (unallocated number)       UNOBTAINABLE
======  =============================================  =====================

The plan itself is the shipped plan file ``firmware_sim/plans/demo.toml`` (`firmware_sim.plan`).
"""

from __future__ import annotations

from collections.abc import Mapping

from firmware_sim.card import SimulatedCard
from firmware_sim.network import Outcome
from firmware_sim.plan import Network, Plan, demo_path, load

#: The demo plan as loaded from its file.
DEMO: Plan = load(demo_path())

#: The route the network emulator gives each demo number.
DEMO_PLAN: dict[str, Outcome | tuple[Outcome, ...]] = dict(DEMO.routes)


def install(network: Network) -> None:
    """Route the demo numbers on a card's network emulator (unrouted numbers get cause 1)."""
    DEMO.install(network)


def simulated_card(
    spans: int = 1,
    line: str = "E1",
    *,
    timers: Mapping[str, float] | None = None,
    network_timers: Mapping[str, float] | None = None,
) -> SimulatedCard:
    """A user-side simulated card whose network emulator follows the demo plan."""
    card = SimulatedCard(spans, line, timers=timers, network_timers=network_timers)
    install(card.network)
    return card
