"""Signing webhook bodies, and checking signatures on the receiving side.

The scheme is Stripe's: the sender computes ``HMAC-SHA256(secret, "<timestamp>.<body>")`` and sends
``t=<timestamp>,v1=<hex digest>``. Covering the timestamp lets a receiver reject replayed requests
whose timestamp is too old; covering the exact body bytes means the receiver must verify *before*
parsing the JSON.
"""

from __future__ import annotations

import hashlib
import hmac
import time

__all__ = ["DEFAULT_TOLERANCE", "SIGNATURE_SCHEME", "sign", "verify_signature"]

SIGNATURE_SCHEME = "v1"
"""Name of the signature entry (``v1=<hex>``); another scheme would get another name."""

DEFAULT_TOLERANCE = 300
"""How many seconds a signed timestamp may differ from the receiver's clock by default."""


def _digest(body: bytes, secret: str, timestamp: int) -> str:
    signed = str(timestamp).encode("ascii") + b"." + body
    return hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: str, timestamp: int) -> str:
    """The signature header value for `body` sent at `timestamp`: ``t=<timestamp>,v1=<hex>``."""
    return f"t={timestamp},{SIGNATURE_SCHEME}={_digest(body, secret, timestamp)}"


def _parse_header(header: str) -> tuple[int, list[str]] | None:
    """``t=…,v1=…[,v1=…]`` → (timestamp, signatures); None when malformed."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if not sep:
            return None
        if key == "t":
            if timestamp is not None or not value.isascii() or not value.isdigit():
                return None
            timestamp = int(value)
        elif key == SIGNATURE_SCHEME:
            signatures.append(value)
        # Other keys are future schemes: ignored, so senders can add one during a migration.
    if timestamp is None or not signatures:
        return None
    return timestamp, signatures


def verify_signature(
    body: bytes,
    header: str,
    secret: str,
    *,
    tolerance: int = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True when `header` signs exactly `body` with `secret` within `tolerance` seconds of `now`.

    `body` must be the raw request body, before any JSON parsing. Several ``v1=`` entries are
    accepted (any match wins), which allows rotating the secret. Digests are compared in constant
    time. A malformed header is simply not valid: this function never raises on bad input.
    """
    parsed = _parse_header(header)
    if parsed is None:
        return False
    timestamp, signatures = parsed
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        return False
    expected = _digest(body, secret, timestamp)
    # Check every entry (no early exit) so timing does not reveal which one matched.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected.encode("ascii"), candidate.encode("utf-8"))
    return matched
