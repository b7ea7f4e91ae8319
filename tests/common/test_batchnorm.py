"""recalibrate_batchnorm_: exact running statistics for the current weights."""

import torch
from torch import nn

from weightspace.common.batchnorm import recalibrate_batchnorm_


def test_recalibrate_sets_exact_mean_and_restores_state():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, momentum=0.3)).eval()
    x = torch.randn(10, 3) * 5 + 2
    recalibrate_batchnorm_(m, (x[i:i + 5] for i in range(0, 10, 5)))
    bn = m[1]
    with torch.no_grad():
        assert torch.allclose(bn.running_mean, m[0](x).mean(0), atol=1e-5)
    assert bn.momentum == 0.3 and not m.training and int(bn.num_batches_tracked) == 2


def test_recalibrate_without_batchnorm_does_not_consume_the_batches():
    def batches():
        raise AssertionError("consumed")
        yield
    recalibrate_batchnorm_(nn.Linear(2, 2), batches())
