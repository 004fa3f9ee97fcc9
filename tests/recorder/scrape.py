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

    def metrics(self) -> set[str]:
        """The families of the recorder's own metrics (without the ``_created`` timestamps
        prometheus_client exposes beside each counter and histogram as gauges)."""
        return {name for name in self.families
                if not (name.endswith("_created")
                        and name.removesuffix("_created") in self.families)}

    def sample_names(self, family: str) -> set[str]:
        """The sample names of a family, present or not yet observed (a labelled counter
        has no sample before its first increment)."""
        return {family + suffix for suffix in SUFFIXES.get(self.families[family], ("",))}

    def names(self) -> set[str]:
        """Every sample name the exposition declares."""
        declared = {n for family in self.families for n in self.sample_names(family)}
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
