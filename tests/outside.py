"""Parts of a test that come from outside Python: network namespaces, a database server, a browser.

Locally a missing part skips the tests that need it. Under CI the test script has installed every
part, so a missing one is a failure, never a silent skip.
"""

from __future__ import annotations

import os

import pytest


def require(missing: str | None) -> None:
    """Skip (or, in CI, fail) when `missing` names why an outside part is unavailable."""
    if missing is None:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"needed in CI but unavailable: {missing}")
    pytest.skip(missing)
