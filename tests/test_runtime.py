"""Runtime settings a run changes and gives back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmforge.runtime import torch_threads


def test_torch_threads_sets_the_count_for_the_block_and_restores_it_even_on_error() -> None:
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    with torch_threads(target):
        assert torch.get_num_threads() == target
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(target):
        raise RuntimeError("the run failed")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("threads", [None, 0])
def test_torch_threads_leaves_the_count_alone_when_not_given(threads: int | None) -> None:
    before = torch.get_num_threads()
    with torch_threads(threads):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before


def test_machine_info_reads_the_cpu_it_runs_on() -> None:
    from lmforge.runtime import machine_info

    info = machine_info()
    assert info["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert info["torch_threads"] == torch.get_num_threads() and info["cpus"] >= 1
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        flags = next((line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines()
                      if line.startswith("flags")), [])  # fmt: skip
        assert info["native_bf16"] == ("avx512_bf16" in flags or "amx_bf16" in flags)
        assert set(info["isa_flags"]) <= set(flags)
