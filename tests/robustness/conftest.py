"""Session fixtures of the bad-input suite: the small real assets every case
damages a copy of (see ``_fixtures.build_assets``)."""

from __future__ import annotations

import pytest
import torch

from tests.robustness._fixtures import Assets, build_assets


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    torch.set_num_threads(1)  # the suite shares two cores with other work
    return build_assets(tmp_path_factory.mktemp("robustness_assets"))
