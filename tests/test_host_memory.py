"""pclr_jax.runtime.host_memory: freed memory is reused without faulting it in again (glibc)."""

import json
import os
import subprocess
import sys

import pytest

from pclr_jax.runtime import host_memory

# In a fresh process: optionally keep freed memory, then allocate, touch and free 256 MiB twice
# with libc's malloc (as XLA:CPU does its temporaries) and count the page faults of the second
# round, on a thread (XLA allocates on its worker threads, from their own arenas by default).
PROBE = """
import ctypes, json, resource, sys, threading
from pclr_jax.runtime import host_memory
status = host_memory.keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
size = 256 << 20
faults = []
def rounds():
    for _ in range(2):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults.append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - before)
thread = threading.Thread(target=rounds)
thread.start(); thread.join()
print(json.dumps({"status": status, "faults": faults}))
"""


def _probe(keep: bool) -> dict:
    env = {**os.environ, host_memory.ENV: "1" if keep else "0"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_reused_without_faults():
    kept, default = _probe(keep=True), _probe(keep=False)
    if kept["status"].startswith("unavailable"):
        pytest.skip(kept["status"])
    pages = (256 << 20) // os.sysconf("SC_PAGE_SIZE")
    assert default["status"] == "off" and kept["status"] == "kept"
    # glibc's default: the block is mmap'd and munmap'd, so the second round faults it in again
    assert default["faults"][1] > pages // 2
    # kept: the second round reuses the first round's pages
    assert kept["faults"][0] > pages // 2 and kept["faults"][1] < pages // 100
