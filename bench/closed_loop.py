"""Closed-loop load for bench/throughput.py: C threads, each with its own worker, send photos
round robin for a duration (or a number of requests) and every completed request is kept as a
sample, so that a block's images/s, faces/s and latency percentiles come from the same run."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field

import numpy as np
from peer import percentiles


@dataclass
class Sample:
    """One completed request."""

    photo: str
    latency_ms: float
    faces: int
    took_ms: dict[str, float] = field(default_factory=dict)  # service: the response's timings


Worker = Callable[[bytes, str], tuple[int, dict[str, float]]]


@dataclass
class Block:
    """One side at one concurrency."""

    side: str
    concurrency: int
    wall_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    triton: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        return len(self.samples) / self.wall_s if self.wall_s else 0.0

    @property
    def faces_per_s(self) -> float:
        return sum(s.faces for s in self.samples) / self.wall_s if self.wall_s else 0.0

    def latency(self) -> tuple[float, float]:
        return percentiles([s.latency_ms for s in self.samples])

    def took_means(self) -> dict[str, float]:
        keys = self.samples[0].took_ms.keys() if self.samples else ()
        return {key: float(np.mean([s.took_ms[key] for s in self.samples])) for key in keys}

    def summary(self) -> dict[str, object]:
        p50, p99 = self.latency()
        return {
            "side": self.side,
            "concurrency": self.concurrency,
            "requests": len(self.samples),
            "wall_s": self.wall_s,
            "images_per_s": self.images_per_s,
            "faces_per_s": self.faces_per_s,
            "p50_ms": p50,
            "p99_ms": p99,
            "mean_ms": float(np.mean([s.latency_ms for s in self.samples])),
            "took_ms_mean": self.took_means(),
            "triton": self.triton,
        }


def run_block(
    side: str,
    concurrency: int,
    make_worker: Callable[[], tuple[Worker, Callable[[], None]]],
    photos: dict[str, bytes],
    names: Sequence[str],
    *,
    duration_s: float,
    requests: int | None,
) -> Block:
    """C threads, each with its own worker (and its close), sending the photos ``names`` round
    robin until the deadline or until ``requests`` have been handed out."""
    block = Block(side, concurrency)
    tickets = itertools.count()
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)  # every worker ready (clients made)
    go = threading.Event()  # set once the deadline is
    errors: list[BaseException] = []
    deadline = [0.0]

    def next_photo() -> str | None:
        with lock:
            ticket = next(tickets)
        if errors:
            return None
        if requests is not None:
            return names[ticket % len(names)] if ticket < requests else None
        if time.perf_counter() >= deadline[0]:
            return None
        return names[ticket % len(names)]

    def loop() -> None:
        close: Callable[[], None] = no_op
        try:
            worker, close = make_worker()
            barrier.wait()
            go.wait()
            while (name := next_photo()) is not None:
                started = time.perf_counter()
                faces, took = worker(photos[name], name)
                latency = (time.perf_counter() - started) * 1e3
                with lock:
                    block.samples.append(Sample(name, latency, faces, took))
        except BaseException as error:  # noqa: BLE001 - re-raised in the main thread
            errors.append(error)
            barrier.abort()
        finally:
            close()

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    with suppress(threading.BrokenBarrierError):  # a thread failed: its error is raised below
        barrier.wait()
    started = time.perf_counter()
    deadline[0] = started + duration_s
    go.set()
    for thread in threads:
        thread.join()
    block.wall_s = time.perf_counter() - started
    if errors:
        raise RuntimeError(f"{side} at concurrency {concurrency} failed") from errors[0]
    return block


def no_op() -> None:
    pass
