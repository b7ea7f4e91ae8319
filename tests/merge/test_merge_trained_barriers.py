"""Two independently trained digits models (seeded, a few seconds each): the
loss barrier after weight matching is below naive averaging, and REPAIR
lowers it further. Run with ``-m slow -s`` to see the numbers."""

import pytest

from tests.merge.helpers import analysis, digits, trained
from weightspace.merge import linear_path, weight_matching


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mlp", "cnn_small"])
def test_weight_matching_and_repair_lower_the_barrier(arch, record_property):
    xtr, _, xte, yte = digits()
    m, sd_a = trained(arch, 1)
    _, sd_b = trained(arch, 2)
    spec = analysis(arch).spec
    test = (xte, yte)
    naive = linear_path(m, sd_a, sd_b, test, num_lambdas=11)
    sd_b_aligned = weight_matching(sd_a, sd_b, spec, seed=0).apply(sd_b)
    wm = linear_path(m, sd_a, sd_b_aligned, test, num_lambdas=11)
    wm_repair = linear_path(
        m, sd_a, sd_b_aligned, test, num_lambdas=11, correction="repair", correction_data=xtr, spec=spec
    )
    numbers = {
        "naive": naive.loss_barrier,
        "wm": wm.loss_barrier,
        "wm_repair": wm_repair.loss_barrier,
        "endpoint_acc": (naive.accuracy[0], naive.accuracy[-1]),
    }
    record_property("barriers", numbers)
    print(arch, numbers)
    assert min(naive.accuracy[0], naive.accuracy[-1]) > 0.8  # the endpoints did train
    assert wm.loss_barrier < naive.loss_barrier
    assert wm_repair.loss_barrier < wm.loss_barrier
