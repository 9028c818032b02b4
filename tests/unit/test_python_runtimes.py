"""The python backend's OpenVINO runtime (face_service/inference/python_runtimes.py) on a small ONNX
model built here: fixed shapes compiled at load, a batch run as one slice per thread, with the
results of the whole batch; compiling into a cache folder waits for whoever holds its lock."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from face_service.inference.python_runtimes import OpenvinoRuntime, exclusive


def small_model(path: Path) -> Path:
    """uint8 pixels (N, 3, 8, 8) -> float, 3x3 conv to 4 channels, ReLU, average: (N, 4)."""
    weights = np.random.default_rng(0).normal(size=(4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["pixels"], ["float"], to=TensorProto.FLOAT),
            helper.make_node("Conv", ["float", "weights"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["relu"]),
            helper.make_node("GlobalAveragePool", ["relu"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["out"]),
        ],
        "small",
        [helper.make_tensor_value_info("pixels", TensorProto.UINT8, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 4])],
        [numpy_helper.from_array(weights, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_model(tmp_path_factory.mktemp("model") / "model.onnx")


def pixels(batch: int) -> np.ndarray:
    return np.random.default_rng(batch).integers(0, 256, (batch, 3, 8, 8), dtype=np.uint8)


def test_a_batch_runs_as_one_slice_per_thread_with_the_whole_batchs_results(
    model_file: Path,
) -> None:
    runtime = OpenvinoRuntime(
        model_file, {"intra_op_thread_count": "2", "static_shapes": "1x3x8x8"}, ["out"]
    )
    assert len(runtime.slices) == 2
    batch = pixels(5)
    whole = runtime.dynamic({"pixels": batch})[0]

    def refuse(feed: object) -> list[np.ndarray]:
        raise AssertionError("a batch of 5 went to the whole-batch model")

    runtime.dynamic = refuse
    [sliced] = runtime.run({"pixels": batch})
    assert sliced.shape == (5, 4)
    np.testing.assert_allclose(sliced, whole, rtol=1e-5, atol=1e-6)
    # One input runs on its fixed shape, compiled at load: the same values.
    singles = np.concatenate([runtime.run({"pixels": batch[i : i + 1]})[0] for i in range(5)])
    np.testing.assert_allclose(singles, whole, rtol=1e-5, atol=1e-6)
    # Fewer inputs than threads: one slice each; the slices' buffers are copied out.
    [pair] = runtime.run({"pixels": batch[:2]})
    np.testing.assert_allclose(pair, whole[:2], rtol=1e-5, atol=1e-6)
    runtime.run({"pixels": pixels(3)})
    np.testing.assert_allclose(pair, whole[:2], rtol=1e-5, atol=1e-6)


def test_one_thread_runs_every_batch_whole(model_file: Path) -> None:
    runtime = OpenvinoRuntime(model_file, {"intra_op_thread_count": "1"}, ["out"])
    assert runtime.slices == []
    [out] = runtime.run({"pixels": pixels(3)})
    assert out.shape == (3, 4)


def compile_into(model_file: Path, cache: Path) -> None:
    OpenvinoRuntime(
        model_file, {"cache_directory": str(cache), "intra_op_thread_count": "1"}, ["out"]
    )


def test_compiling_into_a_cache_folder_waits_for_its_lock(model_file: Path, tmp_path: Path) -> None:
    # Two processes writing one compiled blob at once fail (python_runtimes.exclusive): while
    # this process holds the cache folder's lock, another one's compile waits.
    cache = tmp_path / "cache"
    spawn = multiprocessing.get_context("spawn")
    with exclusive(cache):
        other = spawn.Process(target=compile_into, args=(model_file, cache))
        other.start()
        other.join(timeout=5)
        assert other.is_alive(), "compiled while another process held the cache folder's lock"
        assert not any(cache.glob("*.blob"))
    other.join(timeout=60)
    assert other.exitcode == 0
    assert any(cache.glob("*.blob"))
