"""A thread that hands the model's work to another lets go of its OpenMP workers.

GNU OpenMP (libgomp, torch's CPU backend on Linux) keeps a pool of worker threads for every
thread that ran a parallel region. A stream prefills in its session's thread and then decodes in
the shared loop's thread: each keeps a pool, and once the pools hold more threads than the CPU has
cores, every worker is throttled to sleep between regions, so each small kernel of a step pays a
wake-up (measured on 2 cores: ``exp`` over 49,152 floats 71 us against 19 us). ``release_workers``
ends the calling thread's pool (``omp_pause_resource_all``, a soft pause); its next parallel region
starts a fresh one.
"""
from __future__ import annotations

import ctypes
import functools
import glob
import os

import torch

OPENMP_LIBRARIES = ("libgomp*.so*", "libiomp5*.so*", "libomp*.so*")  # the runtime torch links, by vendor
SOFT_PAUSE = 1  # omp_pause_soft: threads end, the runtime stays usable


@functools.cache
def _runtime() -> ctypes.CDLL | None:
    """torch's own OpenMP runtime (the one its kernels' pools belong to), or None."""
    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    lib = os.path.join(os.path.dirname(torch.__file__), "lib")
    for pattern in OPENMP_LIBRARIES:
        for path in sorted(glob.glob(os.path.join(lib, pattern))):
            try:
                runtime = ctypes.CDLL(path)
            except OSError:
                continue
            if hasattr(runtime, "omp_pause_resource_all"):
                runtime.omp_pause_resource_all.argtypes = [ctypes.c_int]
                return runtime
    return None


def release_workers() -> bool:
    """End the calling thread's OpenMP worker pool; True when it was let go."""
    runtime = _runtime()
    return runtime is not None and runtime.omp_pause_resource_all(SOFT_PAUSE) == 0
