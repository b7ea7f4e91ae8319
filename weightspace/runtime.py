"""Process-level runtime settings shared by the library."""

from __future__ import annotations

import torch

__all__ = ["torch_threads"]


class torch_threads:
    """Context manager: ``torch.set_num_threads(n)`` inside, restored after
    (``n=None``: no change).

    The networks this library trains and evaluates (zoo members, metanetworks
    on small graphs, hypernetworks) are small; on a machine where other work
    runs, intra-op threads oversubscribe the cores (measured here: 2 threads
    beside two busy processes ran 7-16x slower than 1 thread).

    Example::

        with torch_threads(1):
            predictor.fit(dataset)
    """

    def __init__(self, n: int | None) -> None:
        if n is not None and int(n) < 1:
            raise ValueError(f"number of threads must be >= 1, got {n}")
        self.n = n

    def __enter__(self) -> None:
        self.old = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(int(self.n))

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.old)
