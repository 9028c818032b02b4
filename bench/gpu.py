"""The service on a GPU, end to end: one Triton (``FACE_DEVICE=gpu``) and several API processes in
the external-Triton mode, driven over HTTP from the same machine with real photos.

Usage (from the repository root, on the GPU machine)::

    python bench/gpu.py --faces-dir ../shared/faces --api-processes 12 --output-json gpu.json
    python bench/gpu.py --device cpu --concurrency 1,4 --duration 3   # a rehearsal on a CPU box

The first API process starts Triton; the others use it through ``FACE_TRITON_URL``. Clients are
``--client-processes`` processes of asyncio + aiohttp, spreading ``C`` requests in flight over
the API processes. It prints, at each concurrency: one-face images/s (``POST /embedding`` on the
LFW photos of ``pairs.csv``), p50/p99 latency, the cores busy in the API processes, in Triton
(with its python-backend stubs) and in the clients, GPU utilisation (NVML, when present) and
Triton's own view of the recognizer (faces per execution, server-side time); then multi-face
photos through ``POST /extract`` (faces/s); the recognizer alone in Triton (batches of
``max_batch_size`` random crops from several threads: faces/s over HTTP, and faces per second of
Triton compute); parity of the GPU embeddings with fp32 onnxruntime on the CPU (same aligned
crops, cosine); and ``bench/accuracy.py``'s figures on the GPU service. Photos are read from
``--faces-dir`` and never copied into the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import csv
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import httpx
import numpy as np
import psutil
from gpu_report import table, wall

from face_service.inference.models import model_input
from face_service.inference.names import DETECTOR_MODEL, RECOGNIZER_MODEL
from face_service.settings import REPOSITORY_ROOT
from face_service.testing.service_process import ServiceProcess

DEFAULT_FACES_DIR = Path("..") / "shared" / "faces"
# Bench defaults for a GPU (each can be overridden with --env): room for many requests per API
# process, and batches big enough for the GPU to amortise a Triton execution.
GPU_ENV = {
    "FACE_MAX_CONCURRENT_REQUESTS": "64",
    "FACE_MAX_QUEUED_REQUESTS": "4096",
    "FACE_RECOGNIZER_MAX_BATCH_SIZE": "256",
    "FACE_DETECTOR_MAX_BATCH_SIZE": "32",
    "FACE_TRITON_MAX_QUEUE_DELAY_US": "500",
    "FACE_TRITON_INSTANCES": "2",
    "FACE_LOG_LEVEL": "warning",
}


# ---------------------------------------------------------------- photos


def one_face_photos(faces_dir: Path, limit: int) -> list[bytes]:
    """The LFW photos of pairs.csv (one centred face each, 250x250), at most ``limit``."""
    with (faces_dir / "pairs.csv").open(newline="") as file:
        names = sorted({row[k] for row in csv.DictReader(file) for k in ("img_a", "img_b")})
    names = [n for n in names if not n.startswith("identities/deepface_")]
    return [(faces_dir / n).read_bytes() for n in names[:limit]]


def group_photos(faces_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((faces_dir / "group").glob("*.jpg"))]


# ---------------------------------------------------------------- load (client processes)


async def drive(
    urls: Sequence[str], route: str, photos: Sequence[bytes], first: int, count: int, window: tuple
) -> tuple[list[float], int, int]:
    """``count`` request loops (global numbers ``first``...); latencies of the answers that
    started inside ``window`` (monotonic start, end), faces in them, and errors."""
    import aiohttp

    start, end = window
    latencies: list[float] = []
    faces = errors = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def loop(number: int) -> None:
            nonlocal faces, errors
            url = urls[number % len(urls)] + route
            k = number
            while time.monotonic() < end:
                form = aiohttp.FormData()
                field = "image" if route == "/embedding" else "images"
                form.add_field(field, photos[k % len(photos)], filename="p.jpg")
                k += len(urls) * 7 + 1
                sent = time.monotonic()
                async with session.post(url, data=form) as response:
                    body = await response.read()
                done = time.monotonic()
                if sent < start or done > end:
                    continue
                if response.status != 200:
                    errors += 1
                    continue
                latencies.append(done - sent)
                if route == "/embedding":
                    faces += 1
                else:
                    faces += sum(len(image["faces"]) for image in json.loads(body)["images"])

        await asyncio.gather(*(loop(first + i) for i in range(count)))
    return latencies, faces, errors


def client_process(job: tuple) -> tuple[list[float], int, int]:
    urls, route, photos, first, count, window = job
    return asyncio.run(drive(urls, route, photos, first, count, window))


# ---------------------------------------------------------------- where the time goes


def cpu_seconds(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds spent by every process on the machine (all cores), idle and iowait aside."""
    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def triton_pids(api_pid: int) -> list[int]:
    """tritonserver (a child of the first API process) and its python-backend stubs."""
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process(api_pid).children():
            if "tritonserver" in child.name():
                return [child.pid, *(p.pid for p in child.children(recursive=True))]
    return []


class GpuSampler:
    """Mean GPU utilisation (%) between start and stop, from NVML; None without it."""

    def __init__(self) -> None:
        self.samples: list[int] = []
        self.handle = None
        with contextlib.suppress(Exception):
            import pynvml

            pynvml.nvmlInit()
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        self._stop = threading.Event()

    def __enter__(self) -> GpuSampler:
        if self.handle is not None:
            threading.Thread(target=self._run, daemon=True).start()
        return self

    def _run(self) -> None:
        import pynvml

        while not self._stop.wait(0.1):
            self.samples.append(pynvml.nvmlDeviceGetUtilizationRates(self.handle).gpu)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def model_stats(triton: str, model: str) -> dict[str, int]:
    stats = httpx.get(f"http://{triton}/v2/models/{model}/stats", timeout=10).json()
    entry = stats["model_stats"][0]
    inference = entry["inference_stats"]
    return {
        "executions": int(entry["execution_count"]),
        "inferences": int(entry["inference_count"]),
        "compute_ns": int(inference["compute_infer"]["ns"]),
        "queue_ns": int(inference["queue"]["ns"]),
        "requests": int(inference["success"]["count"]),
    }


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """Triton adds an execution's compute time to each request it batched: per execution, the
    time is the sum over requests divided by the requests."""
    d = {key: after[key] - before[key] for key in before}
    executions, requests = max(d["executions"], 1), max(d["requests"], 1)
    execution_s = d["compute_ns"] / requests / 1e9
    return {
        "faces_per_execution": d["inferences"] / executions,
        "compute_ms_per_execution": execution_s * 1e3,
        "queue_ms_per_request": d["queue_ns"] / requests / 1e6,
        "faces_per_compute_s": d["inferences"] / (execution_s * executions) if execution_s else 0,
    }


# ---------------------------------------------------------------- one level of load


def run_level(ctx: dict, route: str, photos: Sequence[bytes], concurrency: int) -> dict:
    clients = min(ctx["client_processes"], concurrency)
    shares = [concurrency // clients + (i < concurrency % clients) for i in range(clients)]
    firsts = np.cumsum([0, *shares[:-1]]).tolist()
    start = time.monotonic() + 2.0  # the clients' start-up and a warm-up second stay out
    window = (start + 1.0, start + 1.0 + ctx["duration"])
    jobs = [(ctx["urls"], route, photos, f, s, window) for f, s in zip(firsts, shares, strict=True)]
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        pending = pool.map_async(client_process, jobs)
        while time.monotonic() < window[0]:
            time.sleep(0.01)
        client_pids = [p.pid for p in pool._pool]
        groups = {
            "api": ctx["api_pids"],
            "triton": triton_pids(ctx["api_pids"][0]),
            "clients": client_pids,
        }
        cpu_before = {name: cpu_seconds(pids) for name, pids in groups.items()}
        cpu_before["machine"] = machine_busy_seconds()
        stats_before = {
            m: model_stats(ctx["triton"], m) for m in (DETECTOR_MODEL, RECOGNIZER_MODEL)
        }
        with GpuSampler() as gpu:
            time.sleep(max(0.0, window[1] - time.monotonic()))
        cpu_after = {name: cpu_seconds(pids) for name, pids in groups.items()}
        cpu_after["machine"] = machine_busy_seconds()
        stats_after = {m: model_stats(ctx["triton"], m) for m in (DETECTOR_MODEL, RECOGNIZER_MODEL)}
        results = pending.get()
    latencies = sorted(x for lat, _, _ in results for x in lat)
    faces = sum(f for _, f, _ in results)
    duration = ctx["duration"]
    return {
        "concurrency": concurrency,
        "images_s": len(latencies) / duration,
        "faces_s": faces / duration,
        "p50_ms": 1e3 * float(np.percentile(latencies, 50)) if latencies else None,
        "p99_ms": 1e3 * float(np.percentile(latencies, 99)) if latencies else None,
        "errors": sum(e for _, _, e in results),
        "cores": {k: (cpu_after[k] - cpu_before[k]) / duration for k in cpu_before},
        "gpu_util": gpu.mean,
        "recognizer": stats_delta(stats_before[RECOGNIZER_MODEL], stats_after[RECOGNIZER_MODEL]),
        "detector": stats_delta(stats_before[DETECTOR_MODEL], stats_after[DETECTOR_MODEL]),
    }


# ---------------------------------------------------------------- the recognizer alone


def recognizer_alone(triton: str, threads: int, duration: float) -> dict:
    import tritonclient.http as triton_http

    config = httpx.get(f"http://{triton}/v2/models/{RECOGNIZER_MODEL}/config", timeout=10).json()
    batch = int(config["max_batch_size"])
    pixels = np.random.default_rng(0).integers(0, 256, (batch, 3, 112, 112), dtype=np.uint8)
    end = time.monotonic() + duration

    def work() -> int:
        client = triton_http.InferenceServerClient(
            triton, connection_timeout=60, network_timeout=60
        )
        tensor = triton_http.InferInput(config["input"][0]["name"], list(pixels.shape), "UINT8")
        tensor.set_data_from_numpy(pixels)
        faces = 0
        while time.monotonic() < end:
            client.infer(RECOGNIZER_MODEL, [tensor])
            faces += batch
        return faces

    before = model_stats(triton, RECOGNIZER_MODEL)
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        faces = sum(pool.map(lambda _: work(), range(threads)))
    elapsed = time.monotonic() - started
    delta = stats_delta(before, model_stats(triton, RECOGNIZER_MODEL))
    return {"batch": batch, "threads": threads, "faces_s_over_http": faces / elapsed, **delta}


# ---------------------------------------------------------------- parity with the CPU path


def parity(url: str, repository: Path, photos: Sequence[bytes]) -> dict:
    """Aligned crops of real photos embedded by the service (embed_only) and by fp32
    onnxruntime on the CPU from the same decoded pixels: cosines."""
    import onnxruntime

    crops: list[bytes] = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for start in range(0, len(photos), 16):
            files = [("images", ("p.jpg", p, "image/jpeg")) for p in photos[start : start + 16]]
            data = {"return_face_crops": "true", "limit_faces": "1"}
            answer = client.post("/extract", files=files, data=data).raise_for_status().json()
            crops += [
                base64.b64decode(i["faces"][0]["crop"]) for i in answer["images"] if i["faces"]
            ]
        embedded = []
        for start in range(0, len(crops), 16):
            files = [("images", ("c.jpg", c, "image/jpeg")) for c in crops[start : start + 16]]
            answer = client.post("/extract", files=files, data={"embed_only": "true"})
            embedded += [
                i["faces"][0]["embedding"] for i in answer.raise_for_status().json()["images"]
            ]
    gpu = np.asarray(embedded, np.float32)
    session = onnxruntime.InferenceSession(
        str(repository / RECOGNIZER_MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    images = [cv2.imdecode(np.frombuffer(c, np.uint8), cv2.IMREAD_COLOR) for c in crops]
    cpu = session.run(None, {session.get_inputs()[0].name: model_input(images)})[0]
    cpu = cpu / np.linalg.norm(cpu, axis=1, keepdims=True)
    cosines = (gpu * cpu).sum(1) / np.linalg.norm(gpu, axis=1)
    return {"crops": len(crops), "min_cosine": float(cosines.min()), "mean": float(cosines.mean())}


# ---------------------------------------------------------------- the service


@contextlib.contextmanager
def services(arguments: argparse.Namespace, work_dir: Path) -> Iterator[list[ServiceProcess]]:
    env = {**(GPU_ENV if arguments.device == "gpu" else {}), "FACE_DEVICE": arguments.device}
    env.update(dict(item.split("=", 1) for item in arguments.env))
    log = work_dir / "api0" / "triton" / "triton.log"
    first = ServiceProcess(api_port=0, triton_port=0, work_dir=work_dir / "api0", env=env)
    started: list[ServiceProcess] = []
    try:
        try:
            started.append(first.start())
        except BaseException:
            if log.is_file():
                sys.stderr.write("Triton's log:\n" + log.read_text(errors="replace")[-6000:] + "\n")
            raise
        others = [
            ServiceProcess(
                api_port=0, triton_url=first.triton_address, work_dir=work_dir / f"api{i}", env=env
            )
            for i in range(1, arguments.api_processes)
        ]
        with ThreadPoolExecutor(8) as pool:
            started += list(pool.map(ServiceProcess.start, others))
        yield started
    finally:
        for service in reversed(started):
            service.stop()
        if arguments.keep_logs and log.is_file():
            shutil.copyfile(log, arguments.keep_logs)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--faces-dir", type=Path, default=DEFAULT_FACES_DIR)
    parser.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    parser.add_argument("--api-processes", type=int, default=8)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--concurrency", default="1,8,32,64,128,256")
    parser.add_argument("--group-concurrency", default="16,64")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds measured per level")
    parser.add_argument("--photos", type=int, default=400, help="LFW photos cycled through")
    parser.add_argument("--recognizer-threads", type=int, default=8)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the service")
    parser.add_argument("--output-json", type=Path)
    parser.add_argument("--keep-logs", type=Path, help="copy Triton's log here at the end")
    arguments = parser.parse_args(argv)
    if not arguments.faces_dir.is_absolute():
        arguments.faces_dir = (REPOSITORY_ROOT / arguments.faces_dir).resolve()
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    arguments = parse_args(argv)
    photos = one_face_photos(arguments.faces_dir, arguments.photos)
    groups = group_photos(arguments.faces_dir)
    report: dict = {"arguments": {k: str(v) for k, v in vars(arguments).items()}}
    out = sys.stdout
    with (
        tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp,
        services(arguments, Path(tmp)) as started,
    ):
        ctx = {
            "urls": [s.url for s in started],
            "api_pids": [s.process.pid for s in started if s.process],
            "triton": started[0].triton_address,
            "client_processes": arguments.client_processes,
            "duration": arguments.duration,
        }
        out.write(
            f"{len(started)} API processes on one Triton ({ctx['triton']}), "
            f"{os.cpu_count()} cores, device {arguments.device}\n"
        )
        cores = os.cpu_count() or 1
        levels = [run_level(ctx, "/embedding", photos, c) for c in levels_of(arguments.concurrency)]
        report["one_face"] = levels
        title = f"\nPOST /embedding, {len(photos)} LFW photos (one face):"
        out.write(table(title, levels, cores) + "\n" + wall(levels, cores) + "\n")
        out.flush()
        save(arguments, report)
        group_levels = levels_of(arguments.group_concurrency)
        if groups and group_levels:
            multi = [run_level(ctx, "/extract", groups, c) for c in group_levels]
            report["multi_face"] = multi
            title = f"\nPOST /extract, {len(groups)} group photos:"
            out.write(table(title, multi, cores) + "\n" + wall(multi, cores) + "\n")
            save(arguments, report)
        alone = recognizer_alone(ctx["triton"], arguments.recognizer_threads, arguments.duration)
        report["recognizer_alone"] = alone
        out.write(f"\nrecognizer alone in Triton: {json.dumps(alone)}\n")
        out.flush()
        repository = Path(
            started[0].env.get("FACE_MODEL_REPOSITORY", REPOSITORY_ROOT / "model_repository")
        )
        report["parity"] = parity(ctx["urls"][0], repository, photos[:64])
        out.write(f"parity with fp32 onnxruntime CPU: {json.dumps(report['parity'])}\n")
        out.flush()
        save(arguments, report)
        if not arguments.skip_accuracy:
            accuracy_json = Path(tmp) / "accuracy.json"
            subprocess.run(
                [
                    sys.executable,
                    str(REPOSITORY_ROOT / "bench" / "accuracy.py"),
                    "--url",
                    ctx["urls"][0],
                    "--faces-dir",
                    str(arguments.faces_dir),
                    "--concurrency",
                    "16",
                    "--output-json",
                    str(accuracy_json),
                ],
                check=False,
            )
            if accuracy_json.is_file():
                report["accuracy"] = json.loads(accuracy_json.read_text()).get("metrics")
    save(arguments, report)


def levels_of(text: str) -> list[int]:
    """``"64,128"`` -> [64, 128]; an empty text, no level."""
    return [int(c) for c in text.split(",") if c.strip()]


def save(arguments: argparse.Namespace, report: dict) -> None:
    """Writes what is measured so far (a run cut short by its time limit keeps it)."""
    if arguments.output_json:
        arguments.output_json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
