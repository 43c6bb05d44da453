"""Read a Prometheus text exposition the way Prometheus does (its own parser), so tests
compare samples, never whole lines."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


def families(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(found: dict[str, Metric], sample: str, **labels: str) -> float | None:
    """The value of sample ``sample`` (``peakend_x_total``, ``peakend_y_count``) with
    exactly ``labels``, or None when the exposition has no such sample."""
    for family in found.values():
        for s in family.samples:
            if s.name == sample and s.labels == labels:
                return float(s.value)
    return None
