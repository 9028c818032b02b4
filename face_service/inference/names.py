"""The names the service and Triton share: the models in the repository, their file layout, and
the prefix of the facts the installer writes into each model."""

from __future__ import annotations

DETECTOR_MODEL = "face_detector"
RECOGNIZER_MODEL = "fr_model"
MODEL_NAMES = (DETECTOR_MODEL, RECOGNIZER_MODEL)
MODEL_FILENAME = "model.onnx"
MODEL_VERSION = "1"
# ONNX metadata keys written by the installer (model_packs.py); copied into config parameters so
# that the pipeline learns them from Triton, local or external.
METADATA_PREFIX = "face_service."
