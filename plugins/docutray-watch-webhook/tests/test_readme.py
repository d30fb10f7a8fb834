"""The README's receiver recipe really verifies what the sink sends."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from docutray_watch_webhook import sign

README = Path(__file__).parent.parent / "README.md"

Verifier = Callable[[bytes, str, str], bool]


@pytest.fixture(name="stdlib_verifier")
def fixture_stdlib_verifier() -> Verifier:
    """`verify_docutray_signature` as defined by the README's standard-library snippet."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    [snippet] = [b for b in blocks if "def verify_docutray_signature" in b]
    namespace: dict[str, object] = {}
    exec(compile(snippet, str(README), "exec"), namespace)  # noqa: S102 - our own README
    verifier = namespace["verify_docutray_signature"]
    assert callable(verifier)
    return verifier


class TestStdlibRecipe:
    def test_accepts_a_fresh_signature(self, stdlib_verifier: Verifier) -> None:
        """The recipe accepts a header made by the sink's `sign` for the same body and secret."""
        body = b'{"status":"SUCCESS"}'
        assert stdlib_verifier(body, sign(body, "k", int(time.time())), "k")

    def test_rejects_altered_body_and_stale_timestamp(self, stdlib_verifier: Verifier) -> None:
        """The recipe rejects a changed body and a ten-minute-old timestamp."""
        body = b'{"status":"SUCCESS"}'
        assert not stdlib_verifier(body + b" ", sign(body, "k", int(time.time())), "k")
        assert not stdlib_verifier(body, sign(body, "k", int(time.time()) - 600), "k")

    @pytest.mark.parametrize("header", ["", "t=x,v1=ab", "t=1", "t=1,t=2,v1=ab", "t=²,v1=é"])
    def test_malformed_headers_are_rejected(self, stdlib_verifier: Verifier, header: str) -> None:
        """The recipe returns False for malformed headers instead of raising."""
        assert stdlib_verifier(b"{}", header, "k") is False
