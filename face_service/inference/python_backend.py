"""The local ``tritonserver`` of the nvidia-pytriton wheel and its python backend: where the binary
and its libraries are, and a backend folder whose stub fits the running Python."""

from __future__ import annotations

import importlib.util
import sys
import sysconfig
from pathlib import Path

from face_service.errors import TritonServerError


def pytriton_server_paths() -> tuple[Path, Path]:
    """The ``tritonserver`` binary and its shared libraries from the nvidia-pytriton wheel.
    Found without importing pytriton: its ``__init__`` imports its Python front end (pyzmq,
    sh, ...), which the service does not use and a GPU machine's environment may lack."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise TritonServerError(
            "no tritonserver found: install nvidia-pytriton or set FACE_TRITON_URL"
        )
    package = Path(next(iter(spec.submodule_search_locations)))
    return (
        package / "tritonserver" / "bin" / "tritonserver",
        package.parent / "nvidia_pytriton.libs",
    )


def python_library_dir() -> Path:
    """The folder of the running Python's shared libpython, which the python backend stub links
    against: without it on the library path the stub finds only a system Python's, if any."""
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        raise TritonServerError(
            f"{sys.executable} was built without a shared libpython, which Triton's python backend "
            "needs: use a Python built with --enable-shared (Debian/Ubuntu's, pyenv's, "
            "python.org's) or an external Triton with the onnxruntime backend (FACE_TRITON_URL)"
        )
    return Path(sysconfig.get_config_var("LIBDIR"))


def prepare_python_backend(backend_directory: Path) -> Path:
    """A backend folder of the service's own: pytriton's python backend plus the stub built for
    the running Python, linked rather than copied so that site-packages stays untouched."""
    binary, _ = pytriton_server_paths()
    tritonserver = binary.parent.parent
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = tritonserver / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise TritonServerError(f"nvidia-pytriton has no python backend stub for Python {version}")
    python_dir = backend_directory / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    sources = [*(tritonserver / "backends" / "python").glob("*.*"), stub]
    for source in sources:
        link = python_dir / source.name
        if link.is_symlink() or link.exists():
            if link.resolve() == source.resolve():
                continue
            link.unlink()
        link.symlink_to(source)
    return backend_directory
