"""Fixtures and helpers the test modules share.

The simulated card and a Card on it come from telecard's own pytest plugin (`sim_card` with the
demo numbering plan, `card`); modules that need another card shape define `sim` themselves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import telecard
from firmware_sim import SimulatedCard
from firmware_sim.demo_plan import simulated_card
from telecard import CallChannel, Card

ROOT = Path(__file__).resolve().parent.parent


def wait_for(condition: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    """Poll `condition` until it is true; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.005)


def free(card: Card, span: int | None = None) -> CallChannel:
    """A channel from card.free_channel(), which must find one."""
    channel = card.free_channel(span)
    assert channel is not None, "no free channel"
    return channel


def subprocess_env() -> dict[str, str]:
    """The environment for a Python subprocess: the telecard these tests import (installed, or
    built in place under pyapi/) and this tree's firmware_sim."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(telecard.__file__).parent.parent), str(ROOT), env.get("PYTHONPATH", "")]
    )
    return env


def python(code: str, *args: str) -> subprocess.Popen[str]:
    """`code` run by another Python process, with pipes for its standard streams."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )


@pytest.fixture
def sim() -> Iterator[SimulatedCard]:
    """A one-span E1 simulated card (demo plan) with a short T303."""
    with simulated_card(timers={"T303": 0.2}) as card:
        yield card


@pytest.fixture
def tc(sim: SimulatedCard) -> Iterator[Card]:
    """A Card on `sim`."""
    with Card.open(sim.device_path) as card:
        yield card
