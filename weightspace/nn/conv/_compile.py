"""Pieces of the GMN's compiled inference path (:meth:`weightspace.nn.GMN.compile_`).

Inside a ``torch.compile`` region (inductor, CPU C++ codegen) the edge
stream is written so that inductor fuses it: the node-to-edge gather is two
``index_select`` (fused with the following add and activation into one
loop over the edges), and the edge GEMMs are plain products whose bias,
residual and the next layer norm fuse into one pass. A product is an
extern call for inductor; on CPU it runs through oneDNN, which on one
thread does these ``[E, 32] x [32, 32]`` products about 1.4x faster than
the BLAS ``mm`` inductor would call (``benchmarks/bench_gmn.py --compile``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["compiler_missing", "is_compiling", "linear_nobias"]

# torch.library.custom_op: torch >= 2.4 (the DGL lane runs torch 2.2, eager only)
_ONEDNN = (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
           and hasattr(torch.library, "custom_op"))

if _ONEDNN:

    @torch.library.custom_op("weightspace::onednn_linear", mutates_args=())
    def _onednn_linear(x: Tensor, weight: Tensor) -> Tensor:
        """``x @ weight.T`` by oneDNN (an opaque call for inductor)."""
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight.contiguous(), None, "none", [], "")

    @_onednn_linear.register_fake
    def _(x: Tensor, weight: Tensor) -> Tensor:
        return x.new_empty(x.shape[0], weight.shape[0])


def is_compiling() -> bool:
    """Whether ``torch.compile`` is tracing this call (``False`` on a torch without it)."""
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling") and compiler.is_compiling())


def linear_nobias(x: Tensor, weight: Tensor) -> Tensor:
    """``x @ weight.T`` (``[M, K], [N, K] -> [M, N]``): oneDNN for float32 on
    CPU without autograd, else ``torch.mm``."""
    if _ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled():
        return _onednn_linear(x, weight)
    return torch.mm(x, weight.t())


def compiler_missing() -> str | None:
    """Why inductor cannot compile C++ here (``None`` where it can): the
    C++ compiler it would call (``$CXX`` / ``torch._inductor.config.cpp.cxx``)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler

        get_cpp_compiler()
    except Exception as exc:  # inductor raises several types for a missing / broken compiler
        return f"no usable C++ compiler for torch.compile ({type(exc).__name__}: {exc})"
    return None
