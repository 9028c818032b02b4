"""Reading a /metrics answer in the tests and the benchmarks: samples by name and labels, and
the metric names an exposition offers (what a dashboard's queries may use)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.parser import text_string_to_metric_families

# The series names each metric type has in the text format.
SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "gauge": ("",),
    "summary": ("_count", "_sum", ""),
}


class Scrape:
    """One exposition: ``value(name, **labels)`` (0 for a series not there yet, as Prometheus's
    counters start), ``series(name)`` every sample of a name."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = list(text_string_to_metric_families(text))
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in self.families:
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def series(self, name: str) -> list[Mapping[str, str]]:
        return [dict(labels) for (found, labels) in self.samples if found == name]

    def names(self) -> set[str]:
        """Every series name the exposition's families have, whether or not a labelled one has
        a sample yet."""
        names = {name for name, _ in self.samples}
        for family in self.families:
            names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        return names

    def buckets(self, name: str, **labels: str) -> dict[str, float]:
        """A histogram's cumulative bucket counts by their ``le`` bound."""
        found = {}
        for (series, label_set), value in self.samples.items():
            sample_labels = dict(label_set)
            le = sample_labels.pop("le", None)
            if series == f"{name}_bucket" and le is not None and sample_labels == labels:
                found[le] = value
        return found
