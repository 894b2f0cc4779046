"""Process-wide runtime settings that a single run may change and must give back."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU thread count set to ``threads`` for the block (left as it is when ``None``
    or 0), then restored, so that one run's ``--threads`` does not leak into the next in the same
    process (tests, notebooks, the Python API)."""
    import torch

    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def machine_info() -> dict[str, Any]:
    """What a measurement ran on: CPU model, cores, the ISA torch dispatches to and the vector
    flags that matter for matmuls (``native_bf16``: AVX512-BF16 or AMX, without which bf16 matmuls
    are emulated), torch's thread count and versions. Benchmarks and reports record it with
    every figure."""
    import torch

    model = platform.processor() or platform.machine()
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = sorted(f for f in flags if f.startswith(("avx512", "amx")) or f in ("avx2", "avx_vnni", "fma"))
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "isa_flags": isa,
        "native_bf16": "avx512_bf16" in flags or "amx_bf16" in flags,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
