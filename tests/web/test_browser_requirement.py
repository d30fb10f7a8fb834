"""The browser tests are never skipped in CI: a missing chromium fails them there."""

from __future__ import annotations

import pytest

from tests.web.conftest import browser_problem, require_browser


def test_a_missing_chromium_fails_in_ci_and_skips_elsewhere() -> None:
    """CI=true: pytest.fail; otherwise pytest.skip, with the reason naming the browser."""
    problem = browser_problem("/nonexistent/chromium")
    assert problem is not None
    assert "/nonexistent/chromium is missing" in problem
    with pytest.raises(pytest.fail.Exception, match="chromium is missing"):
        require_browser(problem, {"CI": "true"})
    with pytest.raises(pytest.skip.Exception, match="chromium is missing"):
        require_browser(problem, {})
    require_browser(None, {"CI": "true"})  # nothing missing: nothing happens
