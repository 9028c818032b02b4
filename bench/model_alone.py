"""The two models alone, in the benchmark's process, run as a service configuration runs them:
the same runtime code (face_service.inference.python_runtimes), the same parameters (the
config.pbtxt the service would generate: threads, precision, shapes compiled at load) and the
same inputs (the detector's canvas for the photo, one 112x112 crop per face). What a request
costs beyond this is the service's overhead."""

from __future__ import annotations

import cv2
import numpy as np

from face_service.imaging import fitted_letterbox, letterbox
from face_service.inference.model_config import (
    build_model_config,
    model_path,
    model_serving_options,
    read_onnx_spec,
)
from face_service.inference.models import model_input
from face_service.inference.names import DETECTOR_MODEL, RECOGNIZER_MODEL
from face_service.inference.python_runtimes import RUNTIMES, Runtime
from face_service.settings import Settings


class ModelAlone:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        options = model_serving_options(settings, "python")
        self.runtimes: dict[str, Runtime] = {}
        self.input_names: dict[str, str] = {}
        for name in (DETECTOR_MODEL, RECOGNIZER_MODEL):
            path = model_path(settings.model_repository, name)
            spec = read_onnx_spec(path)
            config = build_model_config(name, spec, options[name])
            parameters = {key: value.string_value for key, value in config.parameters.items()}
            outputs = [tensor.name for tensor in spec.outputs]
            self.runtimes[name] = RUNTIMES[parameters["runtime"]](path, parameters, outputs)
            self.input_names[name] = spec.inputs[0].name

    def detector_input(self, photo: bytes) -> np.ndarray:
        """The (1, 3, H, W) pixels the service gives the detector for this photo (its models run
        on CPU instances: a photo larger than the canvas limit gets a trimmed canvas)."""
        image = cv2.imdecode(np.frombuffer(photo, np.uint8), cv2.IMREAD_COLOR)
        settings = self.settings
        if settings.detector_canvas == "fit":
            box = fitted_letterbox(
                image, settings.detector_input_size, settings.detector_min_input_size, trim=True
            )
        else:
            box = letterbox(image, settings.detector_input_size)
        return model_input([box.canvas])

    def run(self, detector_inputs: list[np.ndarray], faces: int = 1) -> None:
        """The detector on each input, then the recognizer on ``faces`` crops per input."""
        crops = np.zeros((faces, 3, 112, 112), np.uint8)
        for blob in detector_inputs:
            self.runtimes[DETECTOR_MODEL].run({self.input_names[DETECTOR_MODEL]: blob})
            self.runtimes[RECOGNIZER_MODEL].run({self.input_names[RECOGNIZER_MODEL]: crops})
