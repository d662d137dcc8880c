"""pytest plugin (entry point ``pytest11: telecard``): a simulated card and a Card for tests.

Fixtures:

``sim_card``
    a `firmware_sim.SimulatedCard` (one E1 span, user side) whose network emulator follows the
    demo numbering plan (``telecard --help``); script it further through
    ``sim_card.network.route(...)`` and ``sim_card.network.place_call(...)``.
``card``
    a `telecard.Card` opened on ``sim_card``, or on real hardware with
    ``--telecard-device PATH``; closed after the test, which clears every call the test left up
    (also when it failed), so hardware is left idle.

With ``--telecard-device``, tests that use ``sim_card`` (directly or through another fixture)
or carry the ``needs_sim`` marker are skipped before any of their fixtures is set up.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

from .card import Card

if TYPE_CHECKING:
    from firmware_sim import SimulatedCard

_OPTION = "--telecard-device"
_SKIP_REASON = "needs the simulated card, but --telecard-device selects real hardware"


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--telecard-device``."""
    group = parser.getgroup("telecard")
    group.addoption(
        _OPTION,
        dest="telecard_device",
        metavar="PATH",
        default=None,
        help="open the `card` fixture on this device (PATH or PATH?baud=N) instead of a "
        "simulated card; tests that need the simulator are skipped",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``needs_sim`` marker."""
    config.addinivalue_line(
        "markers", f"needs_sim: the test needs the simulated card (skipped with {_OPTION})"
    )


def _device(config: pytest.Config) -> str | None:
    device: str | None = config.getoption("telecard_device")
    return device


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test that needs the simulator when ``--telecard-device`` selects hardware."""
    # Before any fixture is set up: a test asking for `card` ahead of `sim_card` must not open
    # the hardware (or fail to) before being skipped.
    if _device(item.config) is None:
        return
    uses_sim = "sim_card" in getattr(item, "fixturenames", ())
    if uses_sim or item.get_closest_marker("needs_sim") is not None:
        pytest.skip(_SKIP_REASON)


@pytest.fixture
def sim_card(request: pytest.FixtureRequest) -> Iterator[SimulatedCard]:
    """A `firmware_sim.SimulatedCard` with the demo numbering plan on its network emulator;
    skipped with ``--telecard-device``."""
    if _device(request.config) is not None:
        pytest.skip(_SKIP_REASON)
    from firmware_sim.demo_plan import simulated_card

    with simulated_card() as sim:
        yield sim


@pytest.fixture
def card(request: pytest.FixtureRequest) -> Iterator[Card]:
    """A `telecard.Card` on ``sim_card``, or on the ``--telecard-device`` hardware; closing it
    after the test clears every call the test left up."""
    device = _device(request.config)
    if device is None:
        sim: SimulatedCard = request.getfixturevalue("sim_card")
        device = sim.device_path
    with Card.open(device) as opened:
        yield opened
