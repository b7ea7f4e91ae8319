"""NPLinear: a DWS / NFN-style permutation-equivariant linear layer for MLP
weight spaces."""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["NPLinear"]


def _bcast_rows(v: Tensor, n_rows: int) -> Tensor:
    """``[B, n_cols, C] -> [B, n_rows, n_cols, C]``."""
    return v.unsqueeze(1).expand(-1, n_rows, -1, -1)


def _bcast_cols(v: Tensor, n_cols: int) -> Tensor:
    """``[B, n_rows, C] -> [B, n_rows, n_cols, C]``."""
    return v.unsqueeze(2).expand(-1, -1, n_cols, -1)


class NPLinear(nn.Module):
    r"""Permutation-equivariant linear map between MLP weight spaces with
    ``c_in`` and ``c_out`` channels (NFN "NP" layer, Zhou et al., 2023; the
    same family as DWSNets, Navon et al., 2023).

    For an MLP with layer sizes :math:`n_0, \dots, n_L`, weights
    :math:`W_l \in \mathbb{R}^{n_l \times n_{l-1} \times c}` and biases
    :math:`b_l \in \mathbb{R}^{n_l \times c}`, with :math:`\bar{\cdot}^{r}`,
    :math:`\bar{\cdot}^{c}` the means over rows / columns and
    :math:`\bar{\cdot}` over both:

    .. math::
        W'_l[i,j] &= \Theta_l\big[W_l[i,j],\ \bar W_l^{r}[j],\ \bar W_l^{c}[i],\
            \bar W_l,\ b_l[i],\ b_{l-1}[j],\ \bar W_{l+1}^{r}[i],\
            \bar W_{l-1}^{c}[j],\ g\big]

        b'_l[i] &= \Gamma_l\big[b_l[i],\ \bar b_l,\ \bar W_l^{c}[i],\
            \bar W_{l+1}^{r}[i],\ g\big]

    where :math:`\Theta_l, \Gamma_l` are per-layer linear maps on the
    concatenated channels (terms that do not exist at the first / last layer
    are zero) and :math:`g` is the mean of every layer's :math:`\bar W_l,
    \bar b_l`. Each term is indexed only by the neurons of the entry it
    writes, so permuting the hidden neurons of the input permutes the output
    the same way (equivariant), for every hidden layer independently.

    Args:
        layer_sizes: :math:`(n_0, \dots, n_L)`.
        c_in, c_out: channels.

    Shapes:
        - **input:** ``weights``: list of ``[B, n_l, n_{l-1}, c_in]``;
          ``biases``: list of ``[B, n_l, c_in]``.
        - **output:** the same lists with ``c_out`` channels.
    """

    W_TERMS = 8  # plus the 2-channel-block global term
    B_TERMS = 4

    def __init__(self, layer_sizes: Sequence[int], c_in: int, c_out: int) -> None:
        super().__init__()
        if len(layer_sizes) < 2:
            raise ValueError("an MLP needs at least two layer sizes (input and output)")
        self.layer_sizes = tuple(int(n) for n in layer_sizes)
        self.c_in, self.c_out = c_in, c_out
        L = len(self.layer_sizes) - 1
        self.theta = nn.ModuleList(nn.Linear(self.W_TERMS * c_in + 2 * c_in, c_out) for _ in range(L))
        self.gamma = nn.ModuleList(nn.Linear(self.B_TERMS * c_in + 2 * c_in, c_out) for _ in range(L))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Re-initialize the per-layer maps (PyTorch default init)."""
        for m in list(self.theta) + list(self.gamma):
            m.reset_parameters()

    def forward(self, weights: list[Tensor], biases: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Apply the layer (see class docstring for shapes)."""
        L = len(weights)
        if L != len(self.layer_sizes) - 1 or len(biases) != L:
            raise ValueError(f"expected {len(self.layer_sizes) - 1} weight and bias tensors, got {L} and {len(biases)}")
        row_mean = [w.mean(dim=1) for w in weights]  # [B, n_{l-1}, C]
        col_mean = [w.mean(dim=2) for w in weights]  # [B, n_l, C]
        all_mean = [w.mean(dim=(1, 2)) for w in weights]  # [B, C]
        b_mean = [b.mean(dim=1) for b in biases]  # [B, C]
        g = torch.cat([torch.stack(all_mean).mean(0), torch.stack(b_mean).mean(0)], dim=-1)  # [B, 2C]
        new_w, new_b = [], []
        for l, (w, b) in enumerate(zip(weights, biases)):
            B, n_out, n_in, C = w.shape
            zeros_out = w.new_zeros(B, n_out, C)
            zeros_in = w.new_zeros(B, n_in, C)
            prev_b = biases[l - 1] if l > 0 else zeros_in
            next_rows = row_mean[l + 1] if l + 1 < L else zeros_out  # over n_l
            prev_cols = col_mean[l - 1] if l > 0 else zeros_in  # over n_{l-1}
            terms = [
                w,
                _bcast_rows(row_mean[l], n_out),
                _bcast_cols(col_mean[l], n_in),
                all_mean[l][:, None, None, :].expand(B, n_out, n_in, C),
                _bcast_cols(b, n_in),
                _bcast_rows(prev_b, n_out),
                _bcast_cols(next_rows, n_in),
                _bcast_rows(prev_cols, n_out),
                g[:, None, None, :].expand(B, n_out, n_in, 2 * C),
            ]
            new_w.append(self.theta[l](torch.cat(terms, dim=-1)))
            bterms = [
                b,
                b_mean[l][:, None, :].expand(B, n_out, C),
                col_mean[l],
                next_rows,
                g[:, None, :].expand(B, n_out, 2 * C),
            ]
            new_b.append(self.gamma[l](torch.cat(bterms, dim=-1)))
        return new_w, new_b

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}({list(self.layer_sizes)}, {self.c_in}, {self.c_out})"
