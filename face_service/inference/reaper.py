"""The reaper: a small process that outlives the API just long enough to clean up after it.

The API starts it (:func:`spawn`) in a session of its own and keeps the write end of a pipe to
its stdin; the kernel closes that end however the API ends, ``kill -9`` included. On each line
(``<pgid>``, or ``0`` once the API has stopped Triton itself) the reaper learns the process group
of the current tritonserver and its python-backend stubs; at end of file it stops that group
(SIGTERM, then SIGKILL after a grace period) and removes the /dev/shm regions whose names start
with the prefixes it was given (the API's input regions and the python backend's).

Run as a plain script (``python reaper.py --shm-prefix P ...``): it imports only the standard
library, so that it starts fast and small."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

SHM_DIRECTORY = Path("/dev/shm")


class Reaper:
    """The API's handle on its reaper process: :meth:`watch` reports Triton's process group."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.process = process

    def watch(self, pgid: int) -> None:
        """``pgid``: the group to stop if the API dies; 0 when there is none any more."""
        stdin = self.process.stdin
        if stdin is None or self.process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            stdin.write(f"{pgid}\n".encode())
            stdin.flush()

    def close(self, timeout_s: float = 10.0) -> None:
        """Ends the reaper's watch (it cleans up what is left) and waits for it."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def spawn(shm_prefixes: Sequence[str], grace_s: float = 3.0) -> Reaper:
    """Starts the reaper of this process. Its own session keeps a terminal's Ctrl-C (meant for
    the API, which then stops Triton itself) from ending the reaper first."""
    arguments = [sys.executable, "-I", str(Path(__file__).resolve()), f"--grace-s={grace_s}"]
    arguments += [f"--shm-prefix={prefix}" for prefix in shm_prefixes]
    process = subprocess.Popen(arguments, stdin=subprocess.PIPE, start_new_session=True)
    return Reaper(process)


def _stat(pid: int | str) -> list[str] | None:
    """The fields of /proc/<pid>/stat after the command name (state first), if it exists."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def alive(pid: int) -> bool:
    """Whether the process runs (a zombie, dead but not yet reaped, does not)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. Zombies do not count: orphans go to the
    machine's init, which in some containers reaps them late or never."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is not None and fields[2] == str(pgid) and fields[0] != "Z":
                return True
    return False


def group_runs(pgid: int, argument: str) -> bool:
    """Whether a process of the group that was started with ``argument`` among its arguments
    still runs (a zombie has no arguments left to read)."""
    wanted = argument.encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat(entry.name)
            if fields is None or fields[2] != str(pgid) or fields[0] == "Z":
                continue
            with contextlib.suppress(OSError):
                if wanted in (entry / "cmdline").read_bytes().split(b"\0"):
                    return True
    return False


def wait_until(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Whether ``condition()`` holds within ``timeout_s`` (polled every 50 ms)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def wait_group(pgid: int, timeout_s: float) -> bool:
    """Whether every process of the group is gone within ``timeout_s``."""
    return wait_until(lambda: not group_alive(pgid), timeout_s)


def stop_group(pgid: int, grace_s: float) -> None:
    """SIGTERM to the group while its leader runs (tritonserver shuts down cleanly on it) and up
    to ``grace_s`` for the leader to exit; then SIGKILL to whatever is left (the python-backend
    stubs ignore SIGTERM)."""
    if alive(pgid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        wait_until(lambda: not alive(pgid), grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    wait_group(pgid, grace_s)


def remove_regions(prefixes: Sequence[str], directory: Path = SHM_DIRECTORY) -> list[str]:
    """Unlinks the shared-memory regions whose names start with one of ``prefixes``."""
    removed = []
    with contextlib.suppress(OSError):
        for path in directory.iterdir():
            if any(path.name.startswith(prefix) for prefix in prefixes if prefix):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path.name)
    return removed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shm-prefix", action="append", default=[])
    parser.add_argument("--grace-s", type=float, default=3.0)
    arguments = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    pgid = 0
    for line in sys.stdin.buffer:
        with contextlib.suppress(ValueError):
            pgid = int(line)
    # End of file: the API has exited, one way or another.
    if pgid > 0:
        stop_group(pgid, arguments.grace_s)
    remove_regions(arguments.shm_prefix)
    return 0


if __name__ == "__main__":
    sys.exit(main())
