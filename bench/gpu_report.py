"""bench/gpu.py's tables and its reading of where the wall is, from the levels it measured.

Per level: images/s and faces/s, p50/p99, the cores busy (CPU seconds per second) in the API
processes, in Triton with its python-backend stubs, in the load clients and on the whole machine,
the API's CPU per request (ms), GPU utilisation (NVML) and Triton's view of each model (items per
execution, compute ms per execution). The verdict names the first resource near its ceiling.
"""

from __future__ import annotations

from collections.abc import Sequence

# A resource counts as the wall when it is this busy (of its ceiling).
NEAR_CEILING = 0.85


def api_ms_per_request(level: dict) -> float:
    return 1e3 * level["cores"]["api"] / level["images_s"] if level["images_s"] else float("nan")


def table(title: str, levels: Sequence[dict], cores: int) -> str:
    lines = [
        title,
        f"{'C':>5} {'img/s':>8} {'faces/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'err':>4} "
        f"{'API cores':>9} {'API ms/req':>10} {'Triton':>7} {'clients':>7} "
        f"{'busy/' + str(cores):>8} {'GPU %':>6} {'fr b/exec':>9} {'fr ms/exec':>10} "
        f"{'det b/exec':>10} {'det ms/exec':>11}",
    ]
    for r in levels:
        gpu = "n/a" if r["gpu_util"] is None else f"{r['gpu_util']:.0f}"
        p50 = r["p50_ms"] or float("nan")
        p99 = r["p99_ms"] or float("nan")
        lines.append(
            f"{r['concurrency']:>5} {r['images_s']:>8.1f} {r['faces_s']:>8.1f} {p50:>8.1f} "
            f"{p99:>8.1f} {r['errors']:>4} {r['cores']['api']:>9.1f} "
            f"{api_ms_per_request(r):>10.1f} {r['cores']['triton']:>7.1f} "
            f"{r['cores']['clients']:>7.1f} {r['cores']['machine']:>8.1f} {gpu:>6} "
            f"{r['recognizer']['faces_per_execution']:>9.1f} "
            f"{r['recognizer']['compute_ms_per_execution']:>10.2f} "
            f"{r['detector']['faces_per_execution']:>10.1f} "
            f"{r['detector']['compute_ms_per_execution']:>11.2f}"
        )
    return "\n".join(lines)


def wall(levels: Sequence[dict], cores: int) -> str:
    """Where the wall is at the level of most images/s."""
    if not levels:
        return "where the wall is: nothing measured"
    best = max(levels, key=lambda r: r["images_s"])
    busy = best["cores"]["machine"]
    gpu = best["gpu_util"]
    api = best["cores"]["api"]
    head = (
        f"where the wall is (C={best['concurrency']}, {best['images_s']:.0f} img/s): "
        f"{busy:.1f} of {cores} cores busy (API {api:.1f}, Triton {best['cores']['triton']:.1f}, "
        f"clients {best['cores']['clients']:.1f}), API {api_ms_per_request(best):.1f} ms CPU per "
        f"request, GPU {'n/a' if gpu is None else f'{gpu:.0f} %'}"
    )
    if busy >= NEAR_CEILING * cores:
        verdict = "the CPU: the machine's cores are near full"
        if api >= 0.6 * busy:
            verdict += (
                f"; the API processes hold most ({api / busy:.0%}): their CPU per request "
                "sets the ceiling"
            )
    elif gpu is not None and gpu >= 100 * NEAR_CEILING:
        verdict = "the GPU: near fully busy"
    else:
        verdict = (
            "neither the cores nor the GPU are near full: waiting (batching delay, queueing "
            "between the API's threads and Triton, too few requests in flight)"
        )
    return f"{head}\n  -> {verdict}"
