"""What bench/identification_accuracy.py measured, as rates and as its report: the probes and
enrollments its runs produce, the open-set rates at a threshold (top-1, correct / wrong accept,
false reject, false accept of unknown people), the threshold for a target false accept rate, and
the text and JSON it writes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
from report import format_table

TOP_K = 5
TARGET_FAR = 0.01
SWEEP = np.round(np.arange(0.20, 0.5001, 0.02), 2)


@dataclass
class Probe:
    image: str
    truth: str | None  # the identity id, or None for an unknown person
    subset: str
    face: bool = True
    candidates: list[tuple[str, float]] = field(default_factory=list)  # (identity_id, similarity)


@dataclass
class Enrollment:
    enrolled: dict[str, int] = field(default_factory=dict)  # identity id -> templates
    skipped_people: dict[str, str] = field(default_factory=dict)  # folder -> reason
    skipped_images: dict[str, str] = field(default_factory=dict)  # image -> reason
    seconds: float = 0.0


@dataclass
class Run:
    name: str
    enrollment: Enrollment
    probes: list[Probe]
    threshold: float


# ---------------------------------------------------------------- metrics


@dataclass
class Rates:
    known: int
    known_no_face: int
    unknown: int
    unknown_no_face: int
    top1: float
    rank5: float
    threshold: float
    correct_accept: float
    wrong_accept: float
    false_reject: float
    false_accept: float  # of the unknown probes


def rates(probes: Sequence[Probe], threshold: float) -> Rates:
    known = [p for p in probes if p.truth is not None]
    unknown = [p for p in probes if p.truth is None]

    def top(p: Probe) -> tuple[str | None, float]:
        return p.candidates[0] if p.candidates else (None, -2.0)

    def share(flags: list[bool]) -> float:
        return float(np.mean(flags)) if flags else float("nan")

    return Rates(
        known=len(known),
        known_no_face=sum(not p.face for p in known),
        unknown=len(unknown),
        unknown_no_face=sum(not p.face for p in unknown),
        top1=share([top(p)[0] == p.truth for p in known]),
        rank5=share([p.truth in {c[0] for c in p.candidates} for p in known]),
        threshold=threshold,
        correct_accept=share([top(p)[0] == p.truth and top(p)[1] >= threshold for p in known]),
        wrong_accept=share([top(p)[0] != p.truth and top(p)[1] >= threshold for p in known]),
        false_reject=share([top(p)[1] < threshold for p in known]),
        false_accept=share([top(p)[1] >= threshold for p in unknown]),
    )


def far_threshold(probes: Sequence[Probe], far: float = TARGET_FAR) -> float:
    """The lowest threshold that accepts at most ``far`` of the unknown probes."""
    scores = np.sort([p.candidates[0][1] for p in probes if p.truth is None and p.candidates])[::-1]
    unknown = sum(p.truth is None for p in probes)
    allowed = int(np.floor(far * unknown + 1e-9))
    if allowed >= len(scores):
        return -1.0
    return float(np.nextafter(scores[allowed], np.inf))


def subsets(probes: Sequence[Probe]) -> dict[str, list[Probe]]:
    """all / LFW / deepface; the unknown probes (LFW distractors) go with all and LFW."""
    return {
        "all": list(probes),
        "LFW": [p for p in probes if p.subset == "LFW"],
        "deepface": [p for p in probes if p.subset == "deepface"],
    }


# ---------------------------------------------------------------- report


def pct(value: float) -> str:
    return "-" if np.isnan(value) else f"{100 * value:.1f}%"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return format_table(header, rows).splitlines()


def metric_rows(columns: dict[str, list[Probe]], threshold: float) -> list[list[str]]:
    at = {name: rates(probes, threshold) for name, probes in columns.items()}
    far_at = {name: far_threshold(probes) for name, probes in columns.items()}
    ca_at_far = {
        name: rates(probes, far_at[name]).correct_accept if far_at[name] > -1 else float("nan")
        for name, probes in columns.items()
    }
    values = list(at.values())

    def counted(share: float, total: int) -> str:
        return "-" if np.isnan(share) else f"{pct(share)} ({round(share * total)})"

    return [
        ["known probes (no face)", *(f"{r.known} ({r.known_no_face})" for r in values)],
        ["unknown probes (no face)", *(f"{r.unknown} ({r.unknown_no_face})" for r in values)],
        ["top-1 accuracy", *(pct(r.top1) for r in values)],
        [f"in top {TOP_K}", *(pct(r.rank5) for r in values)],
        [
            f"at threshold {threshold:.2f}: correct accept",
            *(counted(r.correct_accept, r.known) for r in values),
        ],
        ["  wrong accept", *(counted(r.wrong_accept, r.known) for r in values)],
        ["  false reject", *(counted(r.false_reject, r.known) for r in values)],
        ["  unknown: false accept (FAR)", *(counted(r.false_accept, r.unknown) for r in values)],
        [f"CA @ FAR<={100 * TARGET_FAR:.0f}%", *(pct(v) for v in ca_at_far.values())],
        ["  at threshold", *(f"{far_at[n]:.3f}" if far_at[n] > -1 else "-" for n in columns)],
    ]


def sweep_rows(columns: dict[str, list[Probe]]) -> tuple[list[str], list[list[str]]]:
    header = ["thr"]
    for name in columns:
        header += [f"{name} CA", "WA", "FR", "FAR"]
    rows = []
    for threshold in SWEEP:
        row = [f"{threshold:.2f}"]
        for probes in columns.values():
            r = rates(probes, float(threshold))
            row += [pct(r.correct_accept), pct(r.wrong_accept), pct(r.false_reject)]
            row.append(pct(r.false_accept))
        rows.append(row)
    return header, rows


def enrollment_lines(title: str, enrollment: Enrollment) -> list[str]:
    templates = sum(enrollment.enrolled.values())
    lines = [
        f"{title}: {len(enrollment.enrolled)} people enrolled ({templates} templates) in "
        f"{enrollment.seconds:.0f} s; skipped: {len(enrollment.skipped_people)} people, "
        f"{len(enrollment.skipped_images)} more images"
    ]
    lines += [f"  skipped {f}: {r}" for f, r in sorted(enrollment.skipped_people.items())]
    lines += [f"  image skipped {i}: {r}" for i, r in sorted(enrollment.skipped_images.items())]
    return lines


def report(result: dict[str, object], args: argparse.Namespace) -> str:
    runs: dict[str, Run] = result["runs"]  # type: ignore[assignment]
    no_face: dict[str, str] = result["no_face"]  # type: ignore[assignment]
    images: list[str] = result["images"]  # type: ignore[assignment]
    single, by_max, by_mean = runs["single"], runs["max"], runs["mean"]
    threshold = single.threshold
    lines = [
        f"Open-set identification, {args.faces_dir}",
        f"{len(images)} images embedded with POST /embedding in "
        f"{float(result['embed_seconds']):.0f} s; no face in {len(no_face)}"  # type: ignore[arg-type]
        + "".join(f"\n  {i}: {r}" for i, r in sorted(no_face.items())),
        f"service threshold (from /identify/embedding): {threshold:.3f}"
        + (f"; --env {' '.join(f'{k}={v}' for k, v in args.env)}" if args.env else ""),
        "",
        "== 1. one template per person (first photo); probes: every other photo + distractors",
        *enrollment_lines("enrollment", single.enrollment),
        "",
        *table(["", "all", "LFW", "deepface"], metric_rows(subsets(single.probes), threshold)),
        "",
        "threshold sweep (all people; CA correct accept, WA wrong accept, FR false reject of",
        "known probes; FAR: unknown probes accepted)",
        *table(*sweep_rows({"1-template": single.probes})),
        "",
        "== 2. template scoring: every photo but the last enrolled; probes: the last photo +",
        "distractors (the one-template gallery on the same probes for reference)",
        *enrollment_lines("enrollment", by_max.enrollment),
        "",
    ]
    # The same known probes in the three columns: people enrolled in both galleries.
    common = set(single.enrollment.enrolled) & set(by_max.enrollment.enrolled)
    last_photo = {p.image for p in by_max.probes if p.truth is not None}

    def keep(probes: list[Probe]) -> list[Probe]:
        return [
            p for p in probes if p.truth is None or (p.truth in common and p.image in last_photo)
        ]

    columns = {
        "1 template": keep(single.probes),
        "multi, max": keep(by_max.probes),
        "multi, mean": keep(by_mean.probes),
    }
    for subset in ("all", "LFW", "deepface"):
        lines.append(f"-- {subset}")
        lines += table(
            ["", *columns],
            metric_rows({n: subsets(p)[subset] for n, p in columns.items()}, by_max.threshold),
        )
        lines.append("")
    lines += [
        "threshold sweep, multi-template gallery (all people)",
        *table(*sweep_rows({"max": columns["multi, max"], "mean": columns["multi, mean"]})),
        "",
    ]
    lines.append(
        f"SCORING COMPARISON (multi-template gallery, all people, {len(columns['multi, max'])} "
        "probes):"
    )
    for name, run in (("max", by_max), ("mean", by_mean)):
        probes = columns[f"multi, {name}"]
        r = rates(probes, run.threshold)
        at_far = far_threshold(probes)
        lines.append(
            f"  {name:<4}: top-1 {pct(r.top1)}; at threshold {run.threshold:.2f}: correct accept "
            f"{pct(r.correct_accept)} ({round(r.correct_accept * r.known)}/{r.known}), "
            f"FAR {pct(r.false_accept)} ({round(r.false_accept * r.unknown)}/{r.unknown}); "
            f"CA @ FAR<=1% {pct(rates(probes, at_far).correct_accept)} (thr {at_far:.3f})"
        )
    reference = rates(columns["multi, max"], by_max.threshold)
    lines += [
        f"  (one probe is {pct(1 / max(1, reference.known))} of the known, "
        f"{pct(1 / max(1, reference.unknown))} of the unknown: differences of a few probes are "
        "within noise)",
        "",
    ]
    return "\n".join(lines)


def to_json(result: dict[str, object]) -> dict[str, object]:
    runs: dict[str, Run] = result["runs"]  # type: ignore[assignment]
    out: dict[str, object] = {"no_face": result["no_face"], "runs": {}}
    for key, run in runs.items():
        out["runs"][key] = {  # type: ignore[index]
            "name": run.name,
            "threshold": run.threshold,
            "enrollment": asdict(run.enrollment),
            "at_threshold": {
                name: asdict(rates(p, run.threshold)) for name, p in subsets(run.probes).items()
            },
            "sweep": [asdict(rates(run.probes, float(t))) for t in SWEEP],
            "probes": [asdict(p) for p in run.probes],
        }
    return out
