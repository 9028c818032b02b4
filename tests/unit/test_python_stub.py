"""The helpers both python-backend model.py files share (face_service/inference/python_stub.py):
the configuration read from Triton's initialize arguments, and the grouping of a dynamic batch's
requests into calls. (Its exit_with_parent is tested in test_faults.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from face_service.inference.python_stub import groups_of_equal_shape, model_configuration


def test_model_configuration_reads_parameters_and_the_onnx_file() -> None:
    config = {
        "name": "face_recognizer",
        "parameters": {"runtime": {"string_value": "torch"}, "min_cosine": {"string_value": "0.9"}},
    }
    args = {"model_config": json.dumps(config), "model_repository": "/m/r", "model_version": "1"}
    parsed, parameters, model_file = model_configuration(args)
    assert parsed == config
    assert parameters == {"runtime": "torch", "min_cosine": "0.9"}
    assert model_file == Path("/m/r/1/model.onnx")
    config["parameters"]["onnx_model_filename"] = {"string_value": "other.onnx"}
    args["model_config"] = json.dumps(config)
    assert model_configuration(args)[2] == Path("/m/r/1/other.onnx")


def test_requests_with_equal_shapes_but_the_batch_run_together() -> None:
    shapes = [
        [(1, 3, 640, 640)],
        [(2, 3, 320, 320)],
        [(4, 3, 640, 640)],
        [(1, 3, 320, 320)],
    ]
    assert groups_of_equal_shape(shapes, batched=True) == [[0, 2], [1, 3]]
    # Every input's shape counts, not only the first's.
    two_inputs = [[(1, 3), (1, 5)], [(1, 3), (1, 6)], [(2, 3), (2, 5)]]
    assert groups_of_equal_shape(two_inputs, batched=True) == [[0, 2], [1]]


def test_unbatched_requests_run_one_by_one() -> None:
    shapes = [[(640, 640, 3)], [(640, 640, 3)]]
    assert groups_of_equal_shape(shapes, batched=False) == [[0], [1]]
