"""What bench/latency.py times and reports: a case (one request kind on one photo set) with its
variants (each service configuration over HTTP, the peer's variants, each configuration's models
alone) and their samples; the rows of p50/p99 ratios to the peer and of the service's overhead
over its models alone; the table and the JSON document."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from peer import percentiles
from report import format_table

Timed = Callable[[], object]


@dataclass
class Variant:
    """One way of timing a case: a service over HTTP, a peer variant or the models alone."""

    label: str
    run: Timed
    samples_ms: list[float] = field(default_factory=list)


@dataclass
class Case:
    name: str
    services: list[Variant]
    peers: list[Variant]
    # Per service configuration (same order as ``services``): its models alone.
    models: list[Variant] = field(default_factory=list)

    def variants(self) -> list[Variant]:
        return [*self.services, *self.peers, *self.models]


def rows(cases: list[Case]) -> list[dict[str, object]]:
    """One row per case, service configuration and peer variant."""
    result = []
    for case in cases:
        models = case.models or [None] * len(case.services)
        for service, model in zip(case.services, models, strict=True):
            service_p50, service_p99 = percentiles(service.samples_ms)
            model_p50 = percentiles(model.samples_ms)[0] if model is not None else None
            for peer in case.peers:
                peer_p50, peer_p99 = percentiles(peer.samples_ms)
                result.append(
                    {
                        "case": case.name,
                        "service": service.label,
                        "peer": peer.label,
                        "service_p50_ms": service_p50,
                        "service_p99_ms": service_p99,
                        "peer_p50_ms": peer_p50,
                        "peer_p99_ms": peer_p99,
                        "ratio_p50": service_p50 / peer_p50,
                        "ratio_p99": service_p99 / peer_p99,
                        "models_alone_p50_ms": model_p50,
                        "overhead_p50": service_p50 / model_p50 if model_p50 else None,
                    }
                )
    return result


def table(report_rows: list[dict[str, object]]) -> str:
    header = (
        "case",
        "service",
        "peer",
        "svc p50",
        "svc p99",
        "peer p50",
        "peer p99",
        "p50 x",
        "p99 x",
        "model p50",
        "x model",
    )

    def number(value: object, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        (
            str(row["case"]),
            str(row["service"]),
            str(row["peer"]),
            f"{row['service_p50_ms']:.1f}",
            f"{row['service_p99_ms']:.1f}",
            f"{row['peer_p50_ms']:.1f}",
            f"{row['peer_p99_ms']:.1f}",
            f"{row['ratio_p50']:.2f}",
            f"{row['ratio_p99']:.2f}",
            number(row["models_alone_p50_ms"], 1),
            number(row["overhead_p50"], 2),
        )
        for row in report_rows
    ]
    return format_table(header, lines, left=3)


def write_json(path: Path, meta: dict[str, object], cases: list[Case], checks: list[str]) -> None:
    samples = {
        case.name: {variant.label: variant.samples_ms for variant in case.variants()}
        for case in cases
    }
    document = {**meta, "rows": rows(cases), "agreement": checks, "samples_ms": samples}
    path.write_text(json.dumps(document, indent=2) + "\n")
