"""A group of local processes of one command, as a cluster launcher would start them on one
machine: each process gets its own arguments and environment and a log file, the group is waited
for with a deadline, and every process is ended by its PID (never by a name pattern).

Both twins' multi-process tests start their trainers through it (`jaxvae/multiprocess_test.py`,
`torchvae/multiprocess_test.py`); it also serves to try `--num-processes N` on one machine.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

__all__ = ["LAUNCHER_ENV", "free_port", "ProcessGroups"]

# What the trainers read to join a group (theirs and torchrun's): cleared from the environment a
# group starts with, so a launcher around the caller cannot leak into its processes.
LAUNCHER_ENV = ("JAXVAE_COORDINATOR_ADDRESS", "JAXVAE_NUM_PROCESSES", "JAXVAE_PROCESS_ID",
                "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")


def free_port() -> int:
    """A localhost TCP port that was free a moment ago (for a coordinator or rendezvous)."""
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


class ProcessGroups:
    """Named groups of processes, each process logging to `<logs>/<name>.<i>.log`; every process
    ever started is in `procs`, so a caller can end them all (`kill(procs)`) in a `finally`."""

    def __init__(self, logs: Path):
        self.logs, self.procs = Path(logs), []
        self.logs.mkdir(parents=True, exist_ok=True)

    def spawn(self, name: str, processes: int, argv: Callable[[int], Sequence[str]],
              env: Mapping[str, str], env_for: Callable[[int], Mapping[str, str]] | None = None,
              cwd: Path | None = None) -> list[subprocess.Popen]:
        """Start `processes` processes: process i runs `argv(i)` with `env` (less LAUNCHER_ENV)
        plus `env_for(i)`."""
        base = {k: v for k, v in env.items() if k not in LAUNCHER_ENV}
        group = []
        for i in range(processes):
            with open(self.logs / f"{name}.{i}.log", "w") as log:
                group.append(subprocess.Popen(
                    list(argv(i)), env={**base, **(env_for(i) if env_for else {})}, cwd=cwd,
                    stdout=log, stderr=subprocess.STDOUT))
        self.procs += group
        return group

    def log(self, name: str, i: int | None = None) -> str:
        """The end of process i's output; with `i` None, every process's, each under a header
        (a process that died at exit says why only in its own output)."""
        if i is not None:
            return (self.logs / f"{name}.{i}.log").read_text()[-3000:]
        paths = sorted(self.logs.glob(f"{name}.*.log"), key=lambda p: int(p.suffixes[-2][1:]))
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in paths)

    def wait(self, name: str, group: list[subprocess.Popen], deadline: float) -> list[int]:
        """The exit codes, once every process has ended; past `deadline` (a time.time()) the
        group is killed and AssertionError names it with every process's output."""
        while any(p.poll() is None for p in group) and time.time() < deadline:
            time.sleep(0.2)
        if any(p.poll() is None for p in group):
            self.kill(group)
            raise AssertionError(f"{name}: still running after its time bound; " + self.log(name))
        return [p.returncode for p in group]

    def kill(self, group: list[subprocess.Popen]) -> None:
        """SIGKILL each live process of `group` by its PID and reap it."""
        for p in group:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            p.wait()
