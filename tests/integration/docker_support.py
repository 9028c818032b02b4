"""The Docker image replayed without Docker: its environment, user, working directory, volumes
and entry point read from Docker/Dockerfile itself (dockerfile-parse), and its directory layout
and ownership recreated under a temporary root, so that Docker/start.sh runs there as the image's
unprivileged user would run it in a container.

What differs from a container, and only this: the image's paths are mapped into the temporary
root; its /opt/venv is made, as the Dockerfile makes it, from the system's python3 (of this
checkout's minor version), but instead of a `pip install` it gets the packages of this checkout's
virtual environment through a path entry (its .pth files, the editable install of the checkout
among them, are not read: the image's own copy of the code is what runs); tini is not put in
front; the ports are free ones of this machine; and the image's native-onnxruntime tritonserver
(FACE_TRITONSERVER) is replaced by the nvidia-pytriton wheel's with the python backend
(FACE_TRITON_BACKEND=python), the only Triton that runs here. Everything else (the service's
code, start.sh, the models baked as the user by the Dockerfile's own RUN line, the supervision)
is the image's."""

from __future__ import annotations

import contextlib
import fnmatch
import io
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from dockerfile_parse import DockerfileParser

from face_service.settings import REPOSITORY_ROOT
from face_service.testing.service_process import free_ports

SETPRIV = "setpriv"
# What tini would be given: the replay runs the command after "--" directly.
INIT_PREFIXES = (["/usr/bin/tini", "--"], ["tini", "--"])


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile that decide how its container starts."""

    env: dict[str, str]
    args: dict[str, str]
    user: str | None
    workdir: str
    volumes: list[str]
    entrypoint: list[str]
    copies: list[tuple[list[str], str]]  # (sources in the build context, destination)
    root_runs: list[str]  # RUN lines before USER (run as root)
    user_runs: list[str]  # RUN lines after USER (run as the user)

    @classmethod
    def read(cls, path: Path) -> Dockerfile:
        parser = DockerfileParser(fileobj=io.BytesIO(path.read_bytes()))
        args = dict(parser.args)
        user, workdir = None, "/"
        volumes: list[str] = []
        entrypoint: list[str] = []
        copies: list[tuple[list[str], str]] = []
        root_runs: list[str] = []
        user_runs: list[str] = []
        for instruction in parser.structure:
            kind, value = instruction["instruction"], instruction["value"]
            if kind == "USER":
                user = substitute(value, args)
            elif kind == "WORKDIR":
                workdir = substitute(value, args)
            elif kind == "VOLUME":
                volumes += json.loads(value) if value.startswith("[") else value.split()
            elif kind == "ENTRYPOINT":
                entrypoint = json.loads(value)
            elif kind == "COPY":
                *sources, destination = shlex.split(value)
                copies.append((sources, destination))
            elif kind == "RUN":
                (user_runs if user else root_runs).append(substitute(value, args))
        return cls(
            env=dict(parser.envs),
            args=args,
            user=user,
            workdir=workdir,
            volumes=volumes,
            entrypoint=entrypoint,
            copies=copies,
            root_runs=root_runs,
            user_runs=user_runs,
        )

    def uid_gid(self) -> tuple[int, int]:
        if self.user is None:
            return 0, 0
        uid, _, gid = self.user.partition(":")
        if not uid.isdigit() or not (gid or uid).isdigit():
            raise AssertionError(f"USER {self.user}: the replay needs numeric ids (uid:gid)")
        return int(uid), int(gid or uid)

    def user_owned_directories(self) -> list[str]:
        """Directories that root's RUN lines make for another owner (`install -d -o USER`)."""
        found = []
        for run in self.root_runs:
            for words in commands(run):
                if words[:1] != ["install"] or "-d" not in words or "-o" not in words:
                    continue
                operands, skip = [], False
                for word in words[1:]:
                    if skip:
                        skip = False
                    elif word in ("-o", "-g", "-m"):
                        skip = True
                    elif not word.startswith("-"):
                        operands.append(word)
                found += operands
        return found


def commands(run: str) -> list[list[str]]:
    """The simple commands of a shell line, split at its operators (``&&``, ``;``, ``|``...)."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    found: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set("&|;()<>"):
            found.append([])
        else:
            found[-1].append(token)
    return [words for words in found if words]


def substitute(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables.get(m[1] or m[2], m[0]), text)


def dockerignored(relative: str, patterns: list[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        bare = pattern.removeprefix("**/")
        if fnmatch.fnmatch(relative, pattern) or fnmatch.fnmatch(relative, bare):
            return True
        if pattern.startswith("**/") and fnmatch.fnmatch(name, bare):
            return True
    return False


@dataclass
class ReplayedImage:
    """The image laid out under ``root`` and started by :meth:`start` as its user."""

    dockerfile: Dockerfile
    root: Path
    process: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    log: Path | None = None

    def host(self, path: str) -> Path:
        """Where the image's absolute ``path`` lies here."""
        return self.root / path.lstrip("/")

    @property
    def python(self) -> Path:
        return self.host("/opt/venv/bin/python3")

    def make_venv(self) -> None:
        """/opt/venv from the system's python3 (the Dockerfile's `python3 -m venv /opt/venv`),
        with this checkout's installed packages on its path."""
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        system_python = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
        if system_python is None:
            raise AssertionError(
                f"no system {version} (outside any home folder) to make the image's /opt/venv "
                f"from: install it (apt-get install {version} {version}-venv)"
            )
        venv = self.host("/opt/venv")
        subprocess.run([system_python, "-m", "venv", "--without-pip", str(venv)], check=True)
        [site_packages] = (venv / "lib").glob("python3*/site-packages")
        [installed] = [Path(p) for p in sys.path if p.endswith("site-packages")][:1]
        if not traversable_by_others(installed):
            # A checkout under a private home (0700): the image's user could not reach its
            # packages, so they come along as hard links (instant on one filesystem), else copies.
            linked = self.host("/opt/checkout-site-packages")
            copied = subprocess.run(
                ["cp", "-al", str(installed), str(linked)], capture_output=True, check=False
            )
            if copied.returncode != 0:
                shutil.rmtree(linked, ignore_errors=True)
                shutil.copytree(installed, linked, symlinks=True)
            installed = linked
        (site_packages / "checkout-packages.pth").write_text(f"{installed}\n")

    def map_value(self, name: str, value: str) -> str:
        if name == "PATH":
            mapped = [str(self.host(p)) if p.startswith("/") else p for p in value.split(":")]
            return ":".join([p for p in mapped if p] + [os.environ["PATH"]])
        return str(self.host(value)) if value.startswith("/") else value

    def as_user(self) -> list[str]:
        uid, gid = self.dockerfile.uid_gid()
        return [SETPRIV, f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--"]

    def build(self) -> None:
        """The image's directories: root's code under WORKDIR (read-only for the user), the
        user's home, the directories root's RUN lines give to the user, the volumes (owned as
        the image leaves them), then the user's RUN lines (the models) as the user."""
        uid, gid = self.dockerfile.uid_gid()
        self.root.chmod(0o755)
        self.make_venv()
        problem = user_can_run_python(self)
        assert problem is None, problem
        workdir = self.host(self.dockerfile.workdir)
        workdir.mkdir(parents=True)
        ignored = [
            line.strip()
            for line in (REPOSITORY_ROOT / ".dockerignore").read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
        for sources, destination in self.dockerfile.copies:
            for source in sources:
                target = workdir / destination
                if destination.endswith("/"):
                    target = target / Path(source).name
                origin = REPOSITORY_ROOT / source
                if origin.is_dir():
                    shutil.copytree(
                        origin,
                        target,
                        ignore=lambda folder, names: [
                            n
                            for n in names
                            if dockerignored(
                                str((Path(folder) / n).relative_to(REPOSITORY_ROOT)), ignored
                            )
                        ],
                    )
                else:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(origin, target)
        start = workdir / "start.sh"
        if start.exists():
            start.chmod(0o755)  # the Dockerfile's `chmod 0755 start.sh`
        for path in [workdir, *workdir.rglob("*")]:
            path.chmod(path.stat().st_mode & ~0o022)  # root's, not writable by anyone else
        home = self.root / "home" / "face"
        home.mkdir(parents=True)
        os.chown(home, uid, gid)
        owned = self.dockerfile.user_owned_directories()
        for directory in {*owned, *self.dockerfile.volumes}:
            path = self.host(directory)
            path.mkdir(parents=True, exist_ok=True)
            path.chmod(0o755)
            if directory in owned:
                os.chown(path, uid, gid)
        self.env = {
            name: self.map_value(name, value) for name, value in self.dockerfile.env.items()
        }
        self.env["HOME"] = str(home)
        for run in self.dockerfile.user_runs:
            command = " ".join(
                str(self.host(word)) if word.startswith("/") else shlex.quote(word)
                for word in shlex.split(run)
            )
            done = subprocess.run(
                [*self.as_user(), "bash", "-o", "pipefail", "-c", command],
                env=self.env,
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            assert done.returncode == 0, f"RUN {run} failed as the user:\n{done.stderr[-3000:]}"

    def start(self, admin_key: str) -> None:
        """The entry point as the user, with the image's environment (and the replay's
        differences, see the module's docstring), on free ports."""
        entrypoint = list(self.dockerfile.entrypoint)
        for prefix in INIT_PREFIXES:
            if entrypoint[: len(prefix)] == prefix:
                entrypoint = entrypoint[len(prefix) :]
        self.port = free_ports(1)
        triton = free_ports(3)
        env = {name: value for name, value in self.env.items() if name != "FACE_TRITONSERVER"}
        env |= {
            "FACE_TRITON_BACKEND": "python",
            "FACE_PORT": str(self.port),
            "FACE_TRITON_HTTP_PORT": str(triton),
            "FACE_TRITON_GRPC_PORT": str(triton + 1),
            "FACE_TRITON_METRICS_PORT": str(triton + 2),
            "FACE_ADMIN_KEY": admin_key,
        }
        self.log = self.root / "service.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [*self.as_user(), *(str(self.host(w)) for w in entrypoint)],
                env=env,
                cwd=self.host(self.dockerfile.workdir),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, characters: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log else ""

    def wait_healthy(self, timeout_s: float = 240.0) -> None:
        """Until /health answers 200 (no key: it is open), or fails with the service's log."""
        deadline = time.monotonic() + timeout_s
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"the replayed container exited with {self.process.returncode} before "
                    f"/health answered 200:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"/health not 200 after {timeout_s:.0f} s:\n{self.log_tail()}")

    def tritonservers(self) -> list[int]:
        """The pids of the tritonserver processes that run as the image's user."""
        uid, _ = self.dockerfile.uid_gid()
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                command = (entry / "cmdline").read_bytes().split(b"\0")[0]
                owner = entry.stat().st_uid
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if command.endswith(b"/tritonserver") and owner == uid and state != "Z":
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        for pid in self.tritonservers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def traversable_by_others(path: Path) -> bool:
    """Whether every folder from / down to ``path`` lets other users through."""
    return all(os.stat(folder).st_mode & 0o001 for folder in [path, *path.parents])


def user_can_run_python(image: ReplayedImage) -> str | None:
    """Why the image's user cannot import the service's dependencies with the image's
    /opt/venv, or None when it can."""
    if shutil.which(SETPRIV) is None:
        return "setpriv is missing: apt-get install util-linux"
    check = subprocess.run(
        [*image.as_user(), str(image.python), "-c", "import fastapi, pytriton, numpy"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": os.environ["PATH"]},
        cwd="/",
    )
    if check.returncode != 0:
        uid, _ = image.dockerfile.uid_gid()
        return (
            f"uid {uid} cannot import the packages of {sys.prefix} ({check.stderr.strip()}): "
            "make that virtual environment and its parents readable by others (chmod -R o+rX)"
        )
    return None


@contextlib.contextmanager
def temporary_root(prefix: str) -> Iterator[Path]:
    """A temporary folder that other users can traverse (pytest's own are 0700)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:
        path = Path(folder)
        path.chmod(0o755)
        parent = path.parent
        if not os.stat(parent).st_mode & 0o001:
            raise AssertionError(f"{parent} is not traversable by others: set TMPDIR elsewhere")
        yield path
