from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "slow: takes seconds to minutes (builds a wheel or a Go tool); runs in make test"
    )
