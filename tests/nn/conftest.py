import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """Metanetwork tests use small graphs: one intra-op thread avoids thread
    hand-off stalls on a busy 2-core machine (several times slower with 2).
    Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
