"""Shared test settings: every test starts from the same random seed and its own speed-lever cache."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _own_tune_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Measured speed levers (resnets.train.tune) are cached in a folder of the test session's own,
    never the user's ~/.cache/resnets."""
    monkeypatch.setenv("RESNETS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "resnets-cache"))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--regen-expect",
        action="store_true",
        default=False,
        help="rewrite the recorded model outputs in tests/expect/ instead of comparing with them",
    )


@pytest.fixture
def regen_expect(request: pytest.FixtureRequest) -> bool:
    """Whether this run records the expected outputs of tests/test_expect.py afresh."""
    return bool(request.config.getoption("--regen-expect"))
