"""Starting and waiting for jobs of 2 processes on localhost (``jax.distributed`` on 127.0.0.1,
2 faked CPU devices each), for the multi-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def job_environment() -> dict[str, str]:
    """The environment every process of a 2-process CPU job shares (port and id added per job)."""
    return {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
        "JAX_NUM_PROCESSES": "2",
    }


def start_job(
    command: list[str] | Callable[[int], list[str]], cwd=None, env: dict | None = None
) -> list[subprocess.Popen]:
    """Starts ``command`` (or ``command(process_id)``) as processes 0 and 1 of a job coordinated
    on a free local port."""
    env = {**(env or job_environment()), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{free_port()}"}
    return [
        subprocess.Popen(
            command(i) if callable(command) else command,
            cwd=cwd,
            env={**env, "JAX_PROCESS_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]


def finish_job(
    procs: list[subprocess.Popen], timeout: float, expect_rc: int | None = 0
) -> list[str]:
    """Waits for every process; asserts each exits ``expect_rc`` (``None``: any non-zero code);
    returns their outputs (stdout + stderr)."""
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=timeout)[0])
    except subprocess.TimeoutExpired:
        kill_job(procs)
        raise AssertionError(f"the job did not finish within {timeout} s") from None
    for i, (proc, output) in enumerate(zip(procs, outputs, strict=True)):
        ok = proc.returncode != 0 if expect_rc is None else proc.returncode == expect_rc
        assert ok, f"process {i} exited {proc.returncode}:\n{output[-4000:]}"
    return outputs


def kill_job(procs: list[subprocess.Popen]) -> None:
    """SIGKILLs the processes still running and reaps all of them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
