"""The names the service and Triton share: the models in the repository, their file layout, and
the prefix of the facts the installer writes into each model."""

from __future__ import annotations

DETECTOR_MODEL = "face_detector"
RECOGNIZER_MODEL = "face_recognizer"
MODEL_NAMES = (DETECTOR_MODEL, RECOGNIZER_MODEL)
# Names older versions gave models: the installer removes them from a repository, since Triton
# would otherwise load them too.
RETIRED_MODEL_NAMES = ("fr_model",)
MODEL_FILENAME = "model.onnx"
MODEL_VERSION = "1"
# ONNX metadata keys written by the installer (model_packs.py); copied into config parameters so
# that the pipeline learns them from Triton, local or external.
METADATA_PREFIX = "face_service."
# The header that Triton's control APIs (shared memory, model repository, trace, logging) require
# once restricted (server_arguments.py); the client sends it on those calls. gRPC metadata keys
# are lower case, and Triton wants this one prefixed there.
TRITON_CONTROL_HEADER = "face-triton-key"
TRITON_RESTRICTED_APIS = ("shared-memory", "model-repository", "trace", "logging")
