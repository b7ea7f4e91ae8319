"""GMN symmetry on the "real checkpoint" families: the ParameterGraph of a
tiny GPT-2, BERT, ViT, HF ResNet, Llama (GQA + rotary) and nanoGPT-style
model, and of the same network under a random permutation from its derived
spec, give the same graph-level GMN output (float64); node outputs move with
the permutation."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from tests.hf_models import CHECKED, perturbed_model, planted  # noqa: E402
from weightspace.nn import GMN, collate  # noqa: E402

RTOL = 1e-6


def _gmn(width: int) -> GMN:
    torch.manual_seed(0)
    return GMN(out_dim=3, hidden=16, num_layers=2, aggr="sum", node_out=2,
               edge_dim=max(width, 1)).double().eval()


@pytest.mark.parametrize("name", CHECKED)
def test_gmn_graph_output_is_permutation_invariant(name):
    a, sd, perm, sd_p = planted(name)
    t = a.template
    g, gp = t.graph(sd), t.graph(sd_p)
    model = _gmn(t.max_width)
    with torch.no_grad():
        out = model(collate([g], dtype=torch.float64))
        out_p = model(collate([gp], dtype=torch.float64))
        # another network of the same family: the output is not a constant
        other = model(collate([t.graph(perturbed_model(name, seed=1).state_dict())], dtype=torch.float64))
    assert out.graph.dtype == torch.float64 and out.graph.shape == (1, 3)
    scale = float(out.graph.abs().max())
    assert float((out.graph - out_p.graph).abs().max()) <= RTOL * max(scale, 1.0)
    assert float((out.graph - other.graph).abs().max()) > 10 * RTOL * max(scale, 1.0)
    # equivariant node output: node i of the permuted graph is node idx[i]
    idx = t.node_permutation(perm)
    assert not torch.equal(idx, torch.arange(idx.numel()))
    node_scale = max(float(out.node.abs().max()), 1.0)
    assert float((out_p.node - out.node[idx]).abs().max()) <= RTOL * node_scale
