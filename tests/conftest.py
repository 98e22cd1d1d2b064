import os

import torch

# Triton kernels run on CPU tensors through the interpreter when there is no GPU. Must be set before triton
# is imported anywhere.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
from hypothesis import settings  # noqa: E402

import cmn_ext  # noqa: E402,F401  (registers torch.ops.cmn)

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("dev", max_examples=100, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device in this process")

# APoT 4-bit level grids of the papers, as integers over a common denominator (DESIGN 3.3).
APOT_WEIGHT_LEVELS = torch.tensor([0, 1, 2, 3, 4, 6, 8, 10, -1, -2, -3, -4, -6, -8, -10, 0], dtype=torch.int32)
APOT_ACT_LEVELS = torch.tensor([0, 1, 2, 3, 4, 6, 8, 9, 12, 16, 18, 24, 32, 33, 36, 48], dtype=torch.int32)


def pytest_configure(config):
    # helpers.over_backends / over_cases mark every op test with the backend it runs on: pytest -m triton
    for name, what in (("cpu", "the C++ CPU kernels"), ("cuda", "the CUDA C++ kernels"),
                       ("triton", "the Triton kernels (torch.ops.cmn.<op>_triton)")):
        config.addinivalue_line("markers", f"{name}: an op test run on {what}")
