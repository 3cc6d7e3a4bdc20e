"""Progress bars that are drawn only in a terminal.

A bar redraws itself in place with carriage returns; written to a file
(``make run > log.txt 2>&1``, nohup, a batch job) every redraw becomes a line
of its own, thousands per training. tqdm's ``disable=None`` turns a bar off
when the stream it writes to (stderr) is not a terminal; the epoch lines that
the training logs say the same once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from tqdm.auto import tqdm


def progress(
    iterable: Iterable[Any] | None = None, *, show: bool = True, **kwargs: Any
) -> Any:
    """``tqdm(iterable, **kwargs)``, drawn where ``show`` and only in a terminal."""
    return tqdm(iterable, disable=None if show else True, **kwargs)
