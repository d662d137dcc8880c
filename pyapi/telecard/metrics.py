"""Prometheus exposition of a Card's call statistics and health (extra ``telecard[metrics]``).

Register a `TelecardCollector` with a registry of one's own, or let `serve()` run an HTTP
endpoint for the card. Every figure is computed from `Card.statistics()`, `Card.stats` and
the device's link counters when the registry is scraped: nothing is counted twice.

Counters count since the Card opened (a new Card starts them again, which Prometheus reads as a
counter reset). Labels: ``span`` (from "0"), ``direction`` ("incoming" or "outgoing"),
``cause`` (a `Cause` name), ``q850`` (a raw Q.850 value), ``window`` ("life": since the Card
opened; "15m": the statistics' sliding window). A ratio is absent while it has no seizure to be
judged by.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from types import TracebackType
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

try:
    from prometheus_client import CollectorRegistry, make_wsgi_app
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import Collector
except ImportError as exc:
    raise ImportError(
        "telecard.metrics needs prometheus_client: pip install 'telecard[metrics]'"
    ) from exc

from .card import Card
from .statistics import _DIRECTIONS

__all__ = ["MetricsServer", "TelecardCollector", "serve"]


class TelecardCollector(Collector):
    """The metrics of `card`, read from it at every scrape::

        registry = prometheus_client.CollectorRegistry()
        registry.register(telecard.metrics.TelecardCollector(card))

    Calls, by span and direction: ``telecard_seizures_total`` (call records opened, calls
    still up included), ``telecard_calls_total{cause}`` (seizures ended, by `Cause`),
    ``telecard_calls_by_q850_total{q850}`` (those ended with a Q.850 value, by value),
    ``telecard_answered_total`` and ``telecard_effective_total`` (answered, or failed by the
    called user: E.425's numerator of NER); ``telecard_asr_ratio{window}`` and
    ``telecard_ner_ratio{window}`` (`telecard.statistics`).
    Health: ``telecard_card_lost`` (1 once the card's device is gone), ``telecard_events_total``
    and ``telecard_resyncs_total`` (`Card.stats`), ``telecard_event_overflows_total`` (drains
    that found events dropped by the card or the driver), ``telecard_link_retries_total``,
    ``telecard_link_timeouts_total``, ``telecard_link_crc_errors_total`` and
    ``telecard_link_events_dropped_total`` (the driver's link counters, `LinkStats`).
    """

    def __init__(self, card: Card) -> None:
        self._card = card

    def collect(self) -> Iterator[Metric]:
        """The metric families as they are now."""
        stats = self._card.statistics()
        window = f"{stats.window / 60:g}m"
        by_direction = ["span", "direction"]
        seizures = CounterMetricFamily(
            "telecard_seizures",
            "Call records opened (calls still up included)",
            labels=by_direction,
        )
        calls = CounterMetricFamily(
            "telecard_calls", "Seizures ended, by Cause", labels=[*by_direction, "cause"]
        )
        q850 = CounterMetricFamily(
            "telecard_calls_by_q850",
            "Seizures ended with a Q.850 cause value, by value",
            labels=[*by_direction, "q850"],
        )
        answered = CounterMetricFamily(
            "telecard_answered", "Seizures ended that were answered", labels=by_direction
        )
        effective = CounterMetricFamily(
            "telecard_effective",
            "Seizures ended answered or failed by the called user (E.425 NER)",
            labels=by_direction,
        )
        asr = GaugeMetricFamily(
            "telecard_asr_ratio", "Answer-seizure ratio (E.425)", labels=[*by_direction, "window"]
        )
        ner = GaugeMetricFamily(
            "telecard_ner_ratio",
            "Network effectiveness ratio (E.425)",
            labels=[*by_direction, "window"],
        )
        for span in stats.spans:
            for direction, figures in zip(_DIRECTIONS, (span.incoming, span.outgoing), strict=True):
                labels = [str(span.span), direction]
                seizures.add_metric(labels, figures.attempts)
                for cause, n in figures.causes.items():
                    calls.add_metric([*labels, cause.name], n)
                for value, n in figures.q850.items():
                    q850.add_metric([*labels, str(value)], n)
                answered.add_metric(labels, figures.life.answered)
                effective.add_metric(labels, figures.life.effective)
                for name, outcomes in (("life", figures.life), (window, figures.window)):
                    if outcomes.asr is not None:
                        asr.add_metric([*labels, name], outcomes.asr)
                    if outcomes.ner is not None:
                        ner.add_metric([*labels, name], outcomes.ner)
        yield from (seizures, calls, q850, answered, effective, asr, ner)

        card = self._card
        yield GaugeMetricFamily(
            "telecard_card_lost", "1 once the card's device is gone", value=int(card.lost)
        )
        pump = card.stats
        link = card.device.stats
        for name, doc, value in (
            ("telecard_events", "Card events handled", pump.events),
            ("telecard_resyncs", "Re-reads of every channel", pump.resyncs),
            ("telecard_event_overflows", "Drains that found events dropped", pump.ring_overflows),
            ("telecard_link_retries", "Host-link requests sent again", link.retries),
            ("telecard_link_timeouts", "Host-link requests unanswered in time", link.timeouts),
            ("telecard_link_crc_errors", "Host-link frames with a bad CRC", link.crc_errors),
            (
                "telecard_link_events_dropped",
                "Posted events the driver's queue had no room for",
                link.events_dropped,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)


class _Handler(WSGIRequestHandler):
    """No line on stderr for every scrape."""

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """An HTTP endpoint serving one card's metrics from a registry of its own (`registry`, a
    `prometheus_client.CollectorRegistry`, not the global one), on a thread of its own.
    Returned by `serve()`; a context manager (leaving it closes the endpoint)."""

    def __init__(self, card: Card, port: int, addr: str) -> None:
        """Use `serve()`."""
        # The socket module's own errors for these are obscure ("Int or String expected" for
        # True), or come only from bind(), after a name lookup with the port as a service.
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be an int from 0 to 65535, not {port!r}")
        self.registry = CollectorRegistry()
        self.registry.register(TelecardCollector(card))
        family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]
        server_class = _Server6 if family == socket.AF_INET6 else _Server
        self._httpd = make_server(
            addr, port, make_wsgi_app(self.registry), server_class, handler_class=_Handler
        )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name=f"telecard metrics :{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port served (the one the system chose, for port 0)."""
        port: int = self._httpd.server_address[1]
        return port

    def close(self) -> None:
        """Stop serving and close the socket."""
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def serve(card: Card, port: int, addr: str = "127.0.0.1") -> MetricsServer:
    """Serve `card`'s metrics over HTTP on `addr`:`port` (port 0: one the system chooses,
    `MetricsServer.port`), at any path (``/metrics`` by convention), until closed::

        with telecard.metrics.serve(card, 9464):
            ...

    Only loopback by default: give `addr` ("0.0.0.0", "::") to be scraped from elsewhere.
    ValueError for a port that is not an int from 0 to 65535; OSError when the address cannot
    be bound."""
    return MetricsServer(card, port, addr)
