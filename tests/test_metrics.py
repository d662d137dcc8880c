"""telecard.metrics: the Prometheus exposition of a Card's statistics and health, scraped over
loopback and read back with prometheus_client's own parser."""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import prometheus_client
import pytest
from prometheus_client.parser import text_string_to_metric_families

import telecard.metrics
from firmware_sim import SimulatedCard
from telecard import Card, State
from telecard import cli as telecard_cli
from telecard.statistics import WINDOW
from tests.conftest import free, python, subprocess_env, wait_for
from tests.test_cli import TELECARD
from tests.test_statistics import Clock, scripted_mix

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> tuple[Samples, dict[str, str]]:
    """Every sample at `url` by name and labels, and each family's type."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    types = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def family(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def card(sim: SimulatedCard, clock: Clock) -> Iterator[Card]:
    with Card.open(sim.device_path, clock=clock) as card:
        yield card


def test_a_scripted_mix_scraped_over_loopback(card: Card, sim: SimulatedCard) -> None:
    scripted_mix(card, sim)
    with telecard.metrics.serve(card, 0) as server:
        samples, types = scrape(f"http://127.0.0.1:{server.port}/metrics")

    out = {"span": "0", "direction": "outgoing"}
    inc = {"span": "0", "direction": "incoming"}
    assert value(samples, "telecard_seizures_total", **out) == 7
    assert value(samples, "telecard_seizures_total", **inc) == 2
    assert family(samples, "telecard_calls_total") == {
        frozenset({**out, "cause": cause}.items()): n
        for cause, n in (("NORMAL", 2), ("BUSY", 3), ("CONGESTION", 1), ("UNOBTAINABLE", 1))
    } | {
        frozenset({**inc, "cause": cause}.items()): 1 for cause in ("NORMAL", "REJECTED")
    }
    assert family(samples, "telecard_calls_by_q850_total") == {
        frozenset({**out, "q850": q}.items()): n for q, n in (("1", 1), ("16", 2), ("17", 3),
                                                              ("42", 1))
    } | {frozenset({**inc, "q850": q}.items()): 1 for q in ("16", "21")}
    assert value(samples, "telecard_answered_total", **out) == 2
    assert value(samples, "telecard_effective_total", **out) == 5
    assert value(samples, "telecard_answered_total", **inc) == 1
    assert value(samples, "telecard_effective_total", **inc) == 2
    for window in ("life", "15m"):
        assert value(samples, "telecard_asr_ratio", **out, window=window) == pytest.approx(2 / 7)
        assert value(samples, "telecard_ner_ratio", **out, window=window) == pytest.approx(5 / 7)
        assert value(samples, "telecard_asr_ratio", **inc, window=window) == 0.5
        assert value(samples, "telecard_ner_ratio", **inc, window=window) == 1.0

    assert value(samples, "telecard_card_lost") == 0
    assert 0 < (value(samples, "telecard_events_total") or 0) <= card.stats.events
    assert value(samples, "telecard_resyncs_total") == card.stats.resyncs >= 1
    for name in ("event_overflows", "link_retries", "link_timeouts", "link_crc_errors",
                 "link_events_dropped"):
        assert value(samples, f"telecard_{name}_total") == 0, name
    assert types["telecard_calls"] == types["telecard_seizures"] == "counter"
    assert types["telecard_asr_ratio"] == types["telecard_card_lost"] == "gauge"


def test_ratios_leave_the_window_and_are_absent_without_seizures(card: Card, clock: Clock) -> None:
    registry = prometheus_client.CollectorRegistry()
    registry.register(telecard.metrics.TelecardCollector(card))

    def ratio(name: str, window: str) -> float | None:
        labels = {"span": "0", "direction": "outgoing", "window": window}
        got: float | None = registry.get_sample_value(name, labels)
        return got

    assert ratio("telecard_asr_ratio", "life") is None  # no seizure yet: nothing to judge by
    with free(card) as channel:
        assert channel.call("3302") is State.ANSWERED
        assert ratio("telecard_asr_ratio", "life") is None  # up: no outcome yet
    assert ratio("telecard_asr_ratio", "life") == ratio("telecard_asr_ratio", "15m") == 1.0
    clock.now += 2 * WINDOW
    assert ratio("telecard_ner_ratio", "life") == 1.0
    assert ratio("telecard_ner_ratio", "15m") is None


def test_a_lost_card_is_scraped_as_lost(card: Card, sim: SimulatedCard) -> None:
    channel = free(card)
    assert channel.call("3302") is State.ANSWERED
    with telecard.metrics.serve(card, 0) as server:
        sim.faults.vanish()
        wait_for(lambda: card.lost)
        samples, _ = scrape(f"http://127.0.0.1:{server.port}/metrics")
    assert value(samples, "telecard_card_lost") == 1
    labels = {"span": "0", "direction": "outgoing", "cause": "ERROR"}
    assert value(samples, "telecard_calls_total", **labels) == 1


def test_serve_uses_a_registry_of_its_own_and_closes(card: Card) -> None:
    server = telecard.metrics.serve(card, 0)
    url = f"http://127.0.0.1:{server.port}/metrics"
    assert value(scrape(url)[0], "telecard_card_lost") == 0
    assert prometheus_client.REGISTRY.get_sample_value("telecard_card_lost") is None
    server.close()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=5)
    with pytest.raises(OSError):  # a port in use
        with telecard.metrics.serve(card, 0) as first:
            telecard.metrics.serve(card, first.port)


@pytest.mark.parametrize("port", [-1, 65536, True, "9464", 9464.0, None])
def test_serve_refuses_what_is_not_a_port(card: Card, port: object) -> None:
    with pytest.raises(ValueError, match="port must be an int from 0 to 65535"):
        telecard.metrics.serve(card, port)  # type: ignore[arg-type]


def test_importing_telecard_leaves_prometheus_client_alone() -> None:
    proc = python("import sys, telecard; print('prometheus_client' in sys.modules)")
    out, err = proc.communicate(timeout=30)
    assert (proc.returncode, out.strip()) == (0, "False"), err


def test_without_prometheus_client_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    monkeypatch.delitem(sys.modules, "telecard.metrics")
    with pytest.raises(ImportError, match=r"pip install 'telecard\[metrics\]'"):
        importlib.import_module("telecard.metrics")


def test_monitor_metrics_without_prometheus_client_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m.split(".")[0] == "prometheus_client"]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, "telecard.metrics")
    monkeypatch.delattr(telecard, "metrics")
    with pytest.raises(SystemExit) as exited:
        telecard_cli.main(["monitor", "--metrics-port", "0", "--seconds", "0"])
    assert exited.value.code == telecard_cli.ExitStatus.USAGE
    assert "--metrics-port: telecard.metrics needs prometheus_client" in capsys.readouterr().err


def test_monitor_serves_the_metrics_of_its_card() -> None:
    """`telecard monitor --metrics-port 0` on the embedded card, which places one call to each
    demo number: 3302 answered, 3301 busy (17), 3304 congestion (42), 3399 unallocated (1)."""
    proc = subprocess.Popen(
        [*TELECARD, "monitor", "--metrics-port", "0"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=subprocess_env(),
    )
    try:
        assert proc.stderr is not None
        line = ""
        while "serving metrics at " not in line:
            line = proc.stderr.readline()
            assert line, "monitor ended without serving metrics"
        url = line.split("serving metrics at ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
        out = {"span": "0", "direction": "outgoing"}
        deadline = time.monotonic() + 20
        while True:
            samples, _ = scrape(url)
            if sum(family(samples, "telecard_calls_total").values()) == 4:
                break
            assert time.monotonic() < deadline, "the demo calls never ended"
            time.sleep(0.1)
        assert value(samples, "telecard_asr_ratio", **out, window="life") == 0.25
        assert value(samples, "telecard_ner_ratio", **out, window="15m") == 0.5
        assert value(samples, "telecard_calls_by_q850_total", **out, q850="42") == 1
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_monitor_metrics_addr_without_a_port_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An address to serve on but no port: nothing would be served, and nothing said."""
    with pytest.raises(SystemExit) as exited:
        telecard_cli.main(["monitor", "--metrics-addr", "0.0.0.0", "--seconds", "0"])
    assert exited.value.code == telecard_cli.ExitStatus.USAGE
    assert "--metrics-addr: needs --metrics-port" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["-1", "65536", "x", "\u00b2", "9" * 5000])
def test_monitor_metrics_port_must_be_a_port(port: str) -> None:
    result = subprocess.run(
        [*TELECARD, "monitor", "--metrics-port", port], capture_output=True, text=True,
        env=subprocess_env(), timeout=30, check=False,
    )
    assert result.returncode == 2 and "--metrics-port" in result.stderr
