"""A token bucket over all API requests."""

from __future__ import annotations


class TokenBucket:
    """`rate` tokens a second, holding at most one second's worth (and at least one)."""

    __slots__ = ("_capacity", "_rate", "_tokens", "_updated_at")

    def __init__(self, rate: float, now: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._updated_at = now

    @property
    def rate(self) -> float:
        """Tokens added per second."""
        return self._rate

    def take(self, now: float) -> float:
        """Take a token at `now`; return 0.0, or the seconds until one is free (none taken)."""
        elapsed = max(0.0, now - self._updated_at)
        self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._updated_at = max(self._updated_at, now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self._rate
