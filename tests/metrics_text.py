"""Read back the Prometheus text format that `--metrics-file` writes."""

from __future__ import annotations


def parse_metrics(text: str) -> dict[str, float]:
    """Sample lines (``name{labels}`` -> value); every family must have HELP and TYPE gauge."""
    samples: dict[str, float] = {}
    helped: set[str] = set()
    gauges: set[str] = set()
    for line in text.splitlines():
        if line.startswith("# HELP "):
            helped.add(line.split(" ")[2])
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind == "gauge", line
            gauges.add(name)
        elif line:
            key, value = line.rsplit(" ", 1)
            family = key.split("{")[0]
            assert family in helped and family in gauges, line
            samples[key] = float(value)
    assert text.endswith("\n")
    return samples
