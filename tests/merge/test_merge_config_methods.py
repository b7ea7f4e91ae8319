"""The averaging methods of a merge config run (they used to bind the
package's ``average`` function where the module was meant, and failed with
``AttributeError: 'function' object has no attribute 'average'``)."""

import pytest
import torch

from weightspace.arch import create_model
from weightspace.io import save_state_dict
from weightspace.merge import average
from weightspace.merge.config import load_config, run_config


@pytest.fixture
def two_mlps(tmp_path):
    paths = []
    for seed in (0, 1):
        p = tmp_path / f"m{seed}.safetensors"
        save_state_dict(create_model("mlp", seed=seed, hidden=[6]).state_dict(), p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("method", ["average", "task_arithmetic"])
def test_averaging_methods_of_a_config_run(two_mlps, method):
    cfg = {"arch": "mlp", "arch_kwargs": {"hidden": [6]}, "models": two_mlps, "method": method}
    if method == "task_arithmetic":
        cfg["base"] = {"path": two_mlps[0]}
    out = run_config(load_config(cfg))
    sds = [create_model("mlp", seed=s, hidden=[6]).state_dict() for s in (0, 1)]
    if method == "average":
        expected = average(sds)
        assert all(torch.allclose(out.state_dict[k], expected[k]) for k in expected)
    else:  # base + scale * sum of task vectors; with base = model 0, that is model 1's weights
        assert all(torch.allclose(out.state_dict[k], sds[1][k]) for k in sds[1])
