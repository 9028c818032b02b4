"""Triton's own statistics around a load block (``GET /v2/models/<model>/stats``, read before
and after): requests, inferences and executions per model, and the average time per request in
each phase, so that a benchmark can say what the server did apart from what the API did."""

from __future__ import annotations

import httpx

from face_service.inference.names import DETECTOR_MODEL, RECOGNIZER_MODEL

TRITON_MODELS = (DETECTOR_MODEL, RECOGNIZER_MODEL)
TRITON_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


def triton_stats(client: httpx.Client | None) -> dict[str, dict[str, int]] | None:
    """Cumulative counters per model (all versions summed), or None without a Triton address."""
    if client is None:
        return None
    result = {}
    for model in TRITON_MODELS:
        response = client.get(f"/v2/models/{model}/stats")
        response.raise_for_status()
        counters = dict.fromkeys(
            ["inference_count", "execution_count", "requests", "request_ns"]
            + [f"{phase}_ns" for phase in TRITON_PHASES],
            0,
        )
        for entry in response.json().get("model_stats", []):
            stats = entry.get("inference_stats", {})
            counters["inference_count"] += int(entry.get("inference_count", 0))
            counters["execution_count"] += int(entry.get("execution_count", 0))
            counters["requests"] += int(stats.get("success", {}).get("count", 0))
            counters["request_ns"] += int(stats.get("success", {}).get("ns", 0))
            for phase in TRITON_PHASES:
                counters[f"{phase}_ns"] += int(stats.get(phase, {}).get("ns", 0))
        result[model] = counters
    return result


def triton_delta(
    before: dict[str, dict[str, int]] | None,
    after: dict[str, dict[str, int]] | None,
    service_requests: int,
) -> dict[str, dict[str, float]]:
    """Per model: counts over the block, averages per Triton request (microseconds), and the
    server-side time per service request (milliseconds)."""
    if before is None or after is None:
        return {}
    result = {}
    for model in TRITON_MODELS:
        delta = {key: after[model][key] - before[model][key] for key in after[model]}
        requests = delta["requests"]
        executions = delta["execution_count"]
        row: dict[str, float] = {
            "requests": requests,
            "inferences": delta["inference_count"],
            "executions": executions,
            "avg_batch": delta["inference_count"] / executions if executions else 0.0,
        }
        for phase in (*TRITON_PHASES, "request"):
            row[f"{phase}_us"] = delta[f"{phase}_ns"] / requests / 1e3 if requests else 0.0
        row["ms_per_service_request"] = (
            delta["request_ns"] / service_requests / 1e6 if service_requests else 0.0
        )
        row["queue_ms_per_service_request"] = (
            delta["queue_ns"] / service_requests / 1e6 if service_requests else 0.0
        )
        result[model] = row
    return result
