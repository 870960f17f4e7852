"""A few Prometheus metrics, rendered in the text exposition format for ``GET /metrics``.

Small enough to keep in-house: counters, gauges and one latency histogram, all owned by the app
(no process-global registry, so tests and several apps in one process stay apart).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.buckets, value)] += 1
        self.total += value
        self.count += 1


class Metrics:
    def __init__(self) -> None:
        self.connections = 0
        self.ops_applied = 0
        self.send_queue_drops = 0
        self.op_latency = Histogram()
        self.documents_loaded: Callable[[], int] = lambda: 0

    def render(self) -> str:
        lines = [
            "# HELP collab_connections Open WebSocket connections.",
            "# TYPE collab_connections gauge",
            f"collab_connections {self.connections}",
            "# HELP collab_documents_loaded Documents with a running actor.",
            "# TYPE collab_documents_loaded gauge",
            f"collab_documents_loaded {self.documents_loaded()}",
            "# HELP collab_ops_applied_total Operations committed.",
            "# TYPE collab_ops_applied_total counter",
            f"collab_ops_applied_total {self.ops_applied}",
            "# HELP collab_send_queue_drops_total Clients disconnected for a full send queue.",
            "# TYPE collab_send_queue_drops_total counter",
            f"collab_send_queue_drops_total {self.send_queue_drops}",
            "# HELP collab_op_latency_seconds From receiving an op to acknowledging it.",
            "# TYPE collab_op_latency_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(self.op_latency.buckets, self.op_latency.counts, strict=False):
            cumulative += count
            lines.append(f'collab_op_latency_seconds_bucket{{le="{bound}"}} {cumulative}')
        lines.append(f'collab_op_latency_seconds_bucket{{le="+Inf"}} {self.op_latency.count}')
        lines.append(f"collab_op_latency_seconds_sum {self.op_latency.total}")
        lines.append(f"collab_op_latency_seconds_count {self.op_latency.count}")
        return "\n".join(lines) + "\n"
