"""A simulated TC-PRI card below a pseudo-terminal, for testing the host driver."""

from firmware_sim.card import SimulatedCard

__all__ = ["SimulatedCard"]
