"""Runtime settings a run changes and gives back."""

from __future__ import annotations

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
