import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    """The merge tests use tiny tensors: one intra-op thread avoids thread
    hand-off latency (10x on a busy 2-core machine). Restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
