"""Model tests run single-threaded: the machine's cores are shared, and the
small convolutions here gain nothing from more threads but lose a lot to
oversubscription."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
