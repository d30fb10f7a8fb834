"""Tests of `docutray_watch_webhook.signing`: Stripe-style signatures and their verification."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from docutray_watch_webhook import sign, verify_signature

BODY = b'{"pipeline":"invoices","status":"SUCCESS"}'
SECRET = "whsec_signing_test"
T = 1_768_473_045


class TestSign:
    def test_header_is_timestamp_and_hex_hmac_of_timestamp_dot_body(self) -> None:
        """The value is `t=<ts>,v1=<hex HMAC-SHA256(secret, "<ts>.<body>")>`."""
        expected = hmac.new(SECRET.encode(), f"{T}.".encode() + BODY, hashlib.sha256).hexdigest()
        assert sign(BODY, SECRET, T) == f"t={T},v1={expected}"

    def test_signature_depends_on_timestamp(self) -> None:
        """The same body signed at another time gets another digest."""
        assert sign(BODY, SECRET, T).split(",")[1] != sign(BODY, SECRET, T + 1).split(",")[1]


class TestVerifySignature:
    def test_accepts_own_signature(self) -> None:
        """A header made by `sign` verifies for the same body and secret."""
        assert verify_signature(BODY, sign(BODY, SECRET, T), SECRET, now=T)

    def test_rejects_altered_body(self) -> None:
        """One changed byte in the body makes the signature invalid."""
        assert not verify_signature(BODY + b" ", sign(BODY, SECRET, T), SECRET, now=T)

    def test_rejects_wrong_secret(self) -> None:
        """A signature made with another secret is invalid."""
        assert not verify_signature(BODY, sign(BODY, "other", T), SECRET, now=T)

    @pytest.mark.parametrize("offset", [-300, 0, 300])
    def test_accepts_timestamp_within_tolerance(self, offset: int) -> None:
        """Clocks may differ by up to `tolerance` seconds either way."""
        assert verify_signature(BODY, sign(BODY, SECRET, T), SECRET, now=T + offset)

    @pytest.mark.parametrize("offset", [-301, 301, 86_400])
    def test_rejects_stale_or_future_timestamp(self, offset: int) -> None:
        """A timestamp more than `tolerance` seconds away is rejected (replay protection)."""
        assert not verify_signature(BODY, sign(BODY, SECRET, T), SECRET, now=T + offset)

    def test_tolerance_is_configurable(self) -> None:
        """A larger tolerance accepts an older request."""
        header = sign(BODY, SECRET, T)
        assert verify_signature(BODY, header, SECRET, now=T + 600, tolerance=600)

    def test_uses_current_time_by_default(self) -> None:
        """Without `now`, an old timestamp is stale."""
        assert not verify_signature(BODY, sign(BODY, SECRET, T), SECRET)

    def test_any_of_several_signatures_may_match(self) -> None:
        """Several v1 entries are accepted, so a sender can sign with an old and a new secret."""
        valid = sign(BODY, SECRET, T).split(",")[1]
        header = f"t={T},v1={'0' * 64},{valid}"
        assert verify_signature(BODY, header, SECRET, now=T)

    def test_ignores_unknown_schemes(self) -> None:
        """Entries of another scheme (v0=…) neither break nor satisfy verification."""
        header = sign(BODY, SECRET, T) + ",v0=abc"
        assert verify_signature(BODY, header, SECRET, now=T)
        assert not verify_signature(BODY, f"t={T},v0=abc", SECRET, now=T)

    @pytest.mark.parametrize(
        "header",
        [
            "",
            "garbage",
            f"v1={'a' * 64}",
            f"t={T}",
            f"t=abc,v1={'a' * 64}",
            f"t=-{T},v1={'a' * 64}",
            f"t={T},t={T},v1={'a' * 64}",
            f"t={T},v1=é",
        ],
    )
    def test_malformed_header_is_invalid_not_an_error(self, header: str) -> None:
        """A malformed header returns False instead of raising."""
        assert verify_signature(BODY, header, SECRET, now=T) is False
