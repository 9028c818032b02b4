"""The tables bench/throughput.py prints: images/s and latency per concurrency on both sides,
where a service request's time goes (its ``took_ms``, the HTTP hop, Triton's statistics), Triton's
counters per block, and the one-face latency with its ratios to the peer."""

from __future__ import annotations

import numpy as np
from closed_loop import Block
from peer import percentiles
from report import format_table

from face_service.inference.names import DETECTOR_MODEL, RECOGNIZER_MODEL


def throughput_table(levels: list[tuple[Block, Block]]) -> str:
    header = (
        "C",
        "svc img/s",
        "svc faces/s",
        "svc p50",
        "svc p99",
        "peer img/s",
        "peer faces/s",
        "peer p50",
        "peer p99",
        "img/s x",
    )
    lines = []
    for service, peer in levels:
        s50, s99 = service.latency()
        p50, p99 = peer.latency()
        lines.append(
            (
                str(service.concurrency),
                f"{service.images_per_s:.2f}",
                f"{service.faces_per_s:.1f}",
                f"{s50:.1f}",
                f"{s99:.1f}",
                f"{peer.images_per_s:.2f}",
                f"{peer.faces_per_s:.1f}",
                f"{p50:.1f}",
                f"{p99:.1f}",
                f"{service.images_per_s / peer.images_per_s:.2f}",
            )
        )
    return format_table(header, lines)


def breakdown_table(levels: list[tuple[Block, Block]]) -> str:
    """Mean milliseconds per service request."""
    header = (
        "C",
        "latency",
        "HTTP+API",
        "decode",
        "detect",
        "det Triton",
        "det queue",
        "det other",
        "embed",
        "fr Triton",
        "fr queue",
        "embed other",
        "peer decode",
        "peer get",
    )
    lines = []
    for service, peer in levels:
        took = service.took_means()
        latency = float(np.mean([s.latency_ms for s in service.samples]))
        det = service.triton.get(DETECTOR_MODEL, {})
        fr = service.triton.get(RECOGNIZER_MODEL, {})
        peer_took = peer.took_means()

        def cell(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}"

        det_ms = det.get("ms_per_service_request")
        fr_ms = fr.get("ms_per_service_request")
        lines.append(
            (
                str(service.concurrency),
                cell(latency),
                cell(latency - took["total"]),
                cell(took["decode"]),
                cell(took["detect"]),
                cell(det_ms),
                cell(det.get("queue_ms_per_service_request")),
                cell(None if det_ms is None else took["detect"] - det_ms),
                cell(took["embed"]),
                cell(fr_ms),
                cell(fr.get("queue_ms_per_service_request")),
                cell(None if fr_ms is None else took["embed"] - fr_ms),
                cell(peer_took["decode"]),
                cell(peer_took["get"]),
            )
        )
    return format_table(header, lines)


def triton_table(levels: list[tuple[Block, Block]]) -> str:
    header = (
        "C",
        "model",
        "requests",
        "inferences",
        "executions",
        "avg batch",
        "req/exec",
        "queue us",
        "input us",
        "infer us",
        "output us",
        "total us",
    )
    lines = []
    for service, _ in levels:
        for model, row in service.triton.items():
            lines.append(
                (
                    str(service.concurrency),
                    model,
                    f"{row['requests']:.0f}",
                    f"{row['inferences']:.0f}",
                    f"{row['executions']:.0f}",
                    f"{row['avg_batch']:.2f}",
                    f"{row['requests'] / row['executions'] if row['executions'] else 0.0:.2f}",
                    f"{row['queue_us']:.0f}",
                    f"{row['compute_input_us']:.0f}",
                    f"{row['compute_infer_us']:.0f}",
                    f"{row['compute_output_us']:.0f}",
                    f"{row['request_us']:.0f}",
                )
            )
    return format_table(header, lines, left=2)


def one_face_table(samples: dict[str, list[float]]) -> tuple[str, dict[str, float]]:
    peer_label = "peer imdecode + app.get"
    peer_p50, _ = percentiles(samples[peer_label])
    header = ("case", "p50", "p99", "p50 x peer")
    lines = []
    ratios = {}
    for label, values in samples.items():
        p50, p99 = percentiles(values)
        ratios[label] = p50 / peer_p50
        lines.append((label, f"{p50:.1f}", f"{p99:.1f}", f"{p50 / peer_p50:.2f}"))
    return format_table(header, lines), ratios


def best(blocks: list[Block]) -> Block:
    return max(blocks, key=lambda block: block.images_per_s)
