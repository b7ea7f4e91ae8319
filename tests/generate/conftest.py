import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def _one_thread():
    """Tiny models: intra-op threading only adds synchronisation cost (and
    the machines running the suite are often shared)."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def make_checkpoint_set():
    """``make(arch, n_runs=4, per_run=3)``: a ``CheckpointSet`` of freshly
    initialised (untrained) networks of ``arch``, ``per_run`` "epochs" per
    run with metric ``0.1 + 0.2 * epoch + 0.01 * run`` (no zoo, no training)."""
    from weightspace.generate import CheckpointSet
    from weightspace.generate.checkpoint_flow import state_dict_to_vector

    def make(arch, n_runs=4, per_run=3):
        vals, met, ids, eps = [], [], [], []
        for r in range(n_runs):
            for e in range(per_run):
                sd = arch.module(seed=100 * r + e).state_dict()
                vals.append(state_dict_to_vector(arch, sd))
                met.append(0.1 + 0.2 * e + 0.01 * r)
                ids.append(f"run{r}")
                eps.append(e)
        return CheckpointSet(arch, torch.stack(vals), torch.tensor(met), "test_acc", ids, eps)

    return make
