"""A recorder's ``GET /metrics``, parsed with prometheus_client's own parser (the text format
as Prometheus reads it), for tests that check metrics move and that the dashboard's queries
name metrics the recorder exposes."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from prometheus_client.parser import text_string_to_metric_families

# the sample names each metric type exposes (prometheus_client strips them from the family)
SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
}


@dataclass(frozen=True)
class Scrape:
    families: dict[str, str]  # family name -> type
    samples: list[tuple[str, dict[str, str], float]]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        return sum(v for n, got, v in self.samples
                   if n == name and labels.items() <= got.items())

    def names(self) -> set[str]:
        """Every sample name the exposition declares, present or not yet observed (a
        labelled counter has no sample before its first increment)."""
        declared = {name + suffix for name, kind in self.families.items()
                    for suffix in SUFFIXES.get(kind, ("",))}
        return declared | {n for n, _, _ in self.samples}


def scrape(client: httpx.Client) -> Scrape:
    r = client.get("/metrics")
    assert r.status_code == 200, r.text
    families: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for family in text_string_to_metric_families(r.text):
        families[family.name] = family.type
        samples += [(s.name, dict(s.labels), s.value) for s in family.samples]
    return Scrape(families, samples)
