"""The template every model served by Triton follows (:class:`TritonModel`): ``load`` reads the
model's configuration from Triton, so that an external Triton works the same as the local one,
and ``predict`` runs it. Installed models take uint8 RGB pixels (N, 3, H, W) and normalise
inside (:func:`model_input`)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import cv2
import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from face_service.errors import ModelConfigError
from face_service.inference.client import TritonClient
from face_service.inference.names import METADATA_PREFIX


def model_input(images: Sequence[np.ndarray]) -> np.ndarray:
    """A batch (N, 3, H, W) of uint8 pixels in RGB order from same-sized BGR images.

    OpenCV's blobFromImages does the channel swap and the planar layout in one pass: 0.32 ms
    for a 640x416 canvas instead of 0.85 ms for numpy's stack, reversed view and transposed
    copy (the same bytes)."""
    return cv2.dnn.blobFromImages(list(images), 1.0, swapRB=True, ddepth=cv2.CV_8U)


def parameter(config: mc.ModelConfig, key: str, default: str) -> str:
    """A fact the installer wrote into the model (``face_service.<key>``), or ``default``."""
    if METADATA_PREFIX + key in config.parameters:
        return config.parameters[METADATA_PREFIX + key].string_value
    return default


class TritonModel(ABC):
    """One model served by Triton: ``load`` reads its configuration, ``predict`` runs it."""

    model_name: str

    def __init__(self, client: TritonClient) -> None:
        self.client = client
        self.config: mc.ModelConfig | None = None

    @property
    def loaded(self) -> bool:
        return self.config is not None

    async def load(self) -> None:
        config = await self.client.model_config(self.model_name)
        self.configure(config)
        self.config = config

    @abstractmethod
    def configure(self, config: mc.ModelConfig) -> None:
        """Reads what ``predict`` needs from the model's configuration; raises ModelConfigError."""

    async def ensure_loaded(self) -> None:
        if self.config is None:
            await self.load()

    def require_pixels(self, tensor: mc.ModelInput) -> str:
        """The name of an input that takes uint8 pixels; any other input is a model that an
        older installer wrote (normalised float input), which the service no longer feeds."""
        if tensor.data_type != mc.TYPE_UINT8:
            raise ModelConfigError(
                f"{self.model_name}: input {tensor.name!r} is "
                f"{mc.DataType.Name(tensor.data_type)}, not TYPE_UINT8 pixels; run "
                "`python extract_insightface_models.py` to install the models again"
            )
        return tensor.name
