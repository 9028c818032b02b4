"""What both python-backend ``model.py`` files share (python_model.py on the CPU,
python_model_torch.py on a GPU): the stub's lifetime, the model configuration Triton hands it,
and which requests of a dynamic batch can run as one call.

face_service.inference.model_config copies this file beside ``model.py`` (the python backend puts
that folder on ``sys.path``), so it imports nothing of face_service and nothing outside the
standard library.

Each model runs in its own stub process, a child of tritonserver. A stub whose tritonserver is
gone (killed with its API) must end itself, so that no stub holds its memory, its GPU context or
its shared-memory region once nobody can call it.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def exit_with_parent(interval_s: float = 0.5) -> None:
    """Ends this process soon after its parent (tritonserver) is gone. A thread that polls the
    parent rather than PR_SET_PDEATHSIG: that signal fires when the *thread* that forked the stub
    ends, which in tritonserver may be a short-lived loader thread."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-tritonserver", daemon=True).start()


def model_configuration(args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], Path]:
    """The configuration (JSON), its string parameters and the ONNX file, from the arguments
    Triton passes to ``initialize``."""
    config = json.loads(args["model_config"])
    parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
    version_dir = Path(args["model_repository"]) / args["model_version"]
    model_file = version_dir / parameters.get("onnx_model_filename", "model.onnx")
    return config, parameters, model_file


def groups_of_equal_shape(
    shapes: Sequence[Sequence[Sequence[int]]], batched: bool
) -> list[list[int]]:
    """Indices of the requests that can be concatenated into one call: those whose inputs have
    equal shapes but for the batch dimension (each request alone for an unbatched model).
    ``shapes[i]`` holds the shapes of request i's inputs."""
    if not batched:
        return [[i] for i in range(len(shapes))]
    groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
    for i, tensors in enumerate(shapes):
        groups.setdefault(tuple(tuple(shape[1:]) for shape in tensors), []).append(i)
    return list(groups.values())
