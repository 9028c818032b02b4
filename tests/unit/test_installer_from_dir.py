"""The model installer's --from-dir packs (extract_insightface_models.py over
face_service.inference.model_packs and onnx_rewrite): a custom pack from renamed and nested files,
a pack switch that reinstalls the same files, a missing recognizer or folder, broken ONNX files,
the SCRFD output layouts (the real model and synthetic ones: batched, unbatched, unknown ones
refused), and which model of a folder is taken for each role. Every repository lives under
tmp_path."""

from __future__ import annotations

import shutil
from pathlib import Path

import onnx
import pytest
from onnx import helper

from face_service.errors import ModelRepositoryError
from face_service.inference import model_packs, onnx_rewrite
from tests.unit.model_pack_support import (
    DETECTOR_FILE,
    RECOGNIZER_FILE,
    SCRFD_GROUPS,
    SCRFD_STRIDES,
    Dims,
    error_messages,
    install,
    link,
    model_path,
    parameters,
    read_config,
    read_manifest,
    save_model,
    scrfd_outputs,
    sha256_bytes,
    synthetic_detector,
    tensors,
)

# 1. --from-dir ------------------------------------------------------------------------------


def test_from_dir_installs_custom_pack_from_renamed_files(
    tmp_path: Path, repository: Path, vectron: Path
) -> None:
    source = tmp_path / "my_models"
    link(vectron / DETECTOR_FILE, source / "det.onnx")
    (source / "nested").mkdir(parents=True)
    shutil.copyfile(vectron / RECOGNIZER_FILE, source / "nested" / "rec.onnx")
    # A helper model of the wheel that is neither a detector nor a recognizer is ignored.
    link(vectron / "2d106det.onnx", source / "landmarks.onnx")

    assert install(repository, "--from-dir", str(source)) == 0
    manifest = read_manifest(repository)
    assert manifest["pack"] == "custom"
    assert manifest["source"] == f"local directory {source}"
    assert manifest["similarity_threshold"] == pytest.approx(model_packs.CUSTOM_PACK_THRESHOLD)
    models = manifest["models"]
    assert models["face_detector"]["source_file"] == "det.onnx"
    assert models["face_recognizer"]["source_file"] == "rec.onnx"
    assert models["face_detector"]["source_sha256"] == sha256_bytes(vectron / DETECTOR_FILE)
    assert models["face_recognizer"]["source_sha256"] == sha256_bytes(vectron / RECOGNIZER_FILE)
    assert parameters(read_config(repository, "face_recognizer"))["face_service.pack"] == "custom"
    assert parameters(read_config(repository, "face_detector"))["face_service.pack"] == "custom"


def test_switching_pack_reinstalls_even_with_same_files(
    default_install: Path, tmp_path: Path, vectron: Path
) -> None:
    source = tmp_path / "same_files"
    link(vectron / DETECTOR_FILE, source / "det.onnx")
    link(vectron / RECOGNIZER_FILE, source / "rec.onnx")
    assert install(default_install, "--from-dir", str(source)) == 0
    assert read_manifest(default_install)["pack"] == "custom"
    installed = onnx.load(str(model_path(default_install, "face_detector")))
    metadata = {prop.key: prop.value for prop in installed.metadata_props}
    assert metadata["face_service.pack"] == "custom"


def test_from_dir_without_recognizer_fails(
    tmp_path: Path, repository: Path, vectron: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "only_detector"
    link(vectron / DETECTOR_FILE, source / "det.onnx")
    assert install(repository, "--from-dir", str(source)) == 2
    assert f"no recognizer ONNX model found in {source}" in error_messages(caplog)
    assert not repository.exists()


def test_from_dir_that_does_not_exist_fails(
    tmp_path: Path, repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "nowhere"
    assert install(repository, "--from-dir", str(missing)) == 2
    assert f"{missing} is not a directory" in error_messages(caplog)


# 2. Broken files ------------------------------------------------------------------------------


def test_from_dir_with_garbage_recognizer_fails(
    tmp_path: Path, repository: Path, vectron: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "broken"
    link(vectron / DETECTOR_FILE, source / "det.onnx")
    garbage = source / "rec.onnx"
    garbage.write_bytes(b"not an onnx model\n" * 64)
    assert install(repository, "--from-dir", str(source)) == 2
    assert f"{garbage} is not a valid ONNX model" in error_messages(caplog)
    assert not (repository / "manifest.json").exists()


def test_load_checked_refuses_a_model_that_fails_the_checker(tmp_path: Path) -> None:
    # Parses as a ModelProto, but has no opset import: onnx.checker refuses it.
    path = tmp_path / "unchecked.onnx"
    path.write_bytes(helper.make_model(helper.make_graph([], "empty", [], [])).SerializeToString())
    model = onnx.load(str(path))
    del model.opset_import[:]
    path.write_bytes(model.SerializeToString())
    with pytest.raises(ModelRepositoryError, match="is not a valid ONNX model") as error:
        onnx_rewrite.load_checked(path)
    assert str(path) in str(error.value)


# 3. SCRFD layouts --------------------------------------------------------------------------------


def test_unbatched_scrfd_layout_installs_with_max_batch_size_zero(
    tmp_path: Path, repository: Path, vectron: Path
) -> None:
    source = tmp_path / "unbatched"
    synthetic_detector(source / "det.onnx", scrfd_outputs(SCRFD_STRIDES, batched=False))
    link(vectron / RECOGNIZER_FILE, source / "rec.onnx")

    assert install(repository, "--from-dir", str(source)) == 0
    detector = read_manifest(repository)["models"]["face_detector"]
    assert detector["layout"] == "unbatched"
    assert detector["batched"] is False
    assert detector["inputs"] == {"pixels": [1, 3, "h", "w"]}
    assert detector["outputs"]["kps_32"] == ["A", 10]

    config = read_config(repository, "face_detector")
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert tensors(config.input) == {"pixels": [1, 3, -1, -1]}
    assert tensors(config.output) == {
        f"{group}_{stride}": [-1, width]
        for group, width in SCRFD_GROUPS
        for stride in SCRFD_STRIDES
    }
    assert parameters(config)["face_service.layout"] == "unbatched"
    assert parameters(config)["face_service.batched"] == "false"
    # The recognizer is still batched.
    assert read_config(repository, "face_recognizer").max_batch_size > 0


def test_batched_scrfd_layouts(vectron: Path, tmp_path: Path) -> None:
    real = vectron / DETECTOR_FILE
    assert (
        onnx_rewrite.scrfd_layout(onnx.load(str(real), load_external_data=False), real) == "batched"
    )
    synthetic = synthetic_detector(tmp_path / "b.onnx", scrfd_outputs(SCRFD_STRIDES, batched=True))
    assert onnx_rewrite.scrfd_layout(onnx.load(str(synthetic)), synthetic) == "batched"


@pytest.mark.parametrize(
    ("case", "outputs"),
    [
        ("two strides", scrfd_outputs((8, 16), batched=False)),
        ("four strides", scrfd_outputs((8, 16, 32, 64), batched=True)),
        (
            "mixed ranks",
            {**scrfd_outputs(SCRFD_STRIDES, batched=True), "score_8": ["A", 1]},
        ),
        (
            "no keypoints",
            {
                **{f"score_{s}": ["A", 1] for s in SCRFD_STRIDES},
                **{f"bbox_{s}": ["A", 4] for s in SCRFD_STRIDES},
                **{f"other_{s}": ["A", 5] for s in SCRFD_STRIDES},
            },
        ),
    ],
)
def test_unknown_scrfd_layout_is_refused(
    case: str,
    outputs: dict[str, Dims],
    tmp_path: Path,
    repository: Path,
    vectron: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = tmp_path / case.replace(" ", "_")
    detector = synthetic_detector(source / "det.onnx", outputs)
    link(vectron / RECOGNIZER_FILE, source / "rec.onnx")
    assert install(repository, "--from-dir", str(source)) == 2
    message = error_messages(caplog)
    assert f"{detector}: unknown SCRFD output layout" in message
    assert not (repository / "manifest.json").exists()
    assert not model_path(repository, "face_detector").exists()


def test_classify_roles(vectron: Path, tmp_path: Path) -> None:
    def role(path: Path) -> str:
        return onnx_rewrite.classify(onnx.load(str(path), load_external_data=False))

    assert role(vectron / DETECTOR_FILE) == "detector"
    assert role(vectron / RECOGNIZER_FILE) == "recognizer"
    assert role(vectron / "2d106det.onnx") == "unknown"
    assert role(vectron / "scrfd_nms.onnx") == "unknown"
    tiny = save_model(tmp_path / "tiny.onnx", {"data": ["N", 3, 112, 112]}, {"fc": [1, 512]})
    assert role(tiny) == "recognizer"


def test_largest_model_of_a_role_is_chosen(vectron: Path, tmp_path: Path) -> None:
    # The small decoys sort first, so a "first found" choice would pick them.
    synthetic_detector(tmp_path / "a_tiny_det.onnx", scrfd_outputs(SCRFD_STRIDES, batched=True))
    save_model(tmp_path / "a_tiny_rec.onnx", {"data": ["N", 3, 112, 112]}, {"fc": [1, 512]})
    link(vectron / DETECTOR_FILE, tmp_path / "b_det.onnx")
    link(vectron / RECOGNIZER_FILE, tmp_path / "b_rec.onnx")
    detector, recognizer = model_packs.find_pack_models(tmp_path)
    assert (detector.name, recognizer.name) == ("b_det.onnx", "b_rec.onnx")
