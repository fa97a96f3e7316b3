"""The relay's metrics for a hosting operator, in the Prometheus text format.

Counters come from `RelayStats` (kept by the server as it works) and per-organisation usage from
the store, both read at scrape time by a custom collector, so the server keeps one set of counts
and `prometheus_client` writes the format. The endpoint listens on an address of its own
(``p2psync relay --metrics HOST:PORT``), meant for the operator's network, not for members.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from p2psync.errors import P2PSyncError, StoreError

if TYPE_CHECKING:
    from p2psync.relay.server import Relay

logger = logging.getLogger(__name__)

PREFIX = "p2psync_relay"

#: RelayStats counters exported as they are: (attribute, metric name, help).
COUNTERS = (
    ("accepted", "connections", "Members admitted (authenticated and joined) since start."),
    ("stored", "entries_stored", "Entries stored since start."),
    ("stored_bytes", "bytes_stored", "Bytes of entries stored since start."),
    ("forwarded", "entries_forwarded", "Entries sent to members since start (live and catching up)."),
    ("forwarded_bytes", "bytes_forwarded", "Bytes of entries sent to members since start."),
    ("duplicates", "entries_duplicate", "Entries received that were already held."),
    ("dropped", "entries_dropped", "Entries dropped for a bad signature, author or organisation."),
    ("equivocations", "entries_equivocating", "Entries refused: a different entry holds their place."),
    ("gaps", "entries_gap", "Entries refused: their author's previous entry is not held."),
    ("expired", "entries_expired", "Entries dropped after their organisation's retention time."),
    ("policies", "policies_stored", "Newer organisation policies stored."),
    ("overflows", "live_queue_overflows", "Slow members whose live queue overflowed."),
)


class RelayCollector(Collector):
    """Reads one relay's counters and its store's usage at each scrape."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay

    def collect(self) -> Iterator[Metric]:
        stats = self.relay.stats
        open_now = GaugeMetricFamily(f"{PREFIX}_connections_open", "Members connected now.")
        open_now.add_metric([], stats.connections)
        yield open_now
        for attribute, name, text in COUNTERS:
            yield CounterMetricFamily(f"{PREFIX}_{name}", text, value=getattr(stats, attribute))
        refusals = CounterMetricFamily(f"{PREFIX}_refusals", "Connections refused or closed by the relay, "
                                       "by kind (quota, rate, auth, revoked, hello, flow, protocol, store, ...).",
                                       labels=["kind"])
        for kind, count in sorted(list(stats.refusals.items())):  # a copy: the server counts on
            refusals.add_metric([kind], count)
        yield refusals
        yield from self._usage()

    def _usage(self) -> Iterator[Metric]:
        held_bytes = GaugeMetricFamily(f"{PREFIX}_org_bytes", "Bytes held per organisation.", labels=["org"])
        held_entries = GaugeMetricFamily(f"{PREFIX}_org_entries", "Entries held per organisation.", labels=["org"])
        quota = GaugeMetricFamily(f"{PREFIX}_org_quota_bytes", "Storage quota per organisation.", labels=["org"])
        try:
            usage = self.relay.store.usage()
        except StoreError as exc:
            logger.warning("metrics without usage: %s", exc)
            usage = {}
        for org, held in sorted(usage.items()):
            held_bytes.add_metric([org], held.bytes)
            held_entries.add_metric([org], held.entries)
            quota.add_metric([org], self.relay.limits.quota_for(org))
        yield from (held_bytes, held_entries, quota)


def registry_for(relay: Relay) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RelayCollector(relay))
    return registry


@contextmanager
def serve_metrics(relay: Relay, where: tuple[str, int] | None) -> Iterator[int | None]:
    """Serve ``/metrics`` at `where` (host, port; port 0: any free one) while inside; yields the port."""
    if where is None:
        yield None
        return
    host, port = where
    try:
        server, thread = start_http_server(port, host, registry_for(relay))
    except OSError as exc:
        raise P2PSyncError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
