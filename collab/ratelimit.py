"""Rate and concurrency limits, pure: the caller passes the clock.

``TokenBucket`` is one limit; ``KeyedBuckets`` keeps one per key (a user) and forgets the keys
whose bucket has refilled, so idle users cost nothing; ``ConnectionCounts`` counts the open
connections per key (a user, an address) against a ceiling. ``Limits`` gathers the server-wide
ones the connections and routes share.
"""

from __future__ import annotations

from dataclasses import dataclass


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spends ``cost`` tokens if there are enough; False means the caller is over the limit."""
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < cost:
            return False
        self._tokens -= cost
        return True

    def full_at(self, now: float) -> bool:
        return self._tokens + (now - self._updated) * self.rate >= self.burst


class KeyedBuckets:
    """A token bucket per key, each ``rate``/s with room for ``burst``."""

    # Above this many keys, a new one first sweeps out the buckets that have refilled: a full
    # bucket is what a fresh one would be, so forgetting it changes nothing.
    SWEEP_AT = 1024

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}

    def take(self, key: str, now: float, cost: float = 1.0) -> bool:
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.SWEEP_AT:
                self._sweep(now)
            bucket = self._buckets[key] = TokenBucket(self.rate, self.burst, now)
        return bucket.take(now, cost)

    def __len__(self) -> int:
        return len(self._buckets)

    def _sweep(self, now: float) -> None:
        for key in [k for k, b in self._buckets.items() if b.full_at(now)]:
            del self._buckets[key]


class ConnectionCounts:
    """Open connections per key, at most ``limit`` each."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._counts: dict[str, int] = {}

    def acquire(self, key: str) -> bool:
        count = self._counts.get(key, 0)
        if count >= self.limit:
            return False
        self._counts[key] = count + 1
        return True

    def release(self, key: str) -> None:
        count = self._counts.get(key, 0) - 1
        if count > 0:
            self._counts[key] = count
        else:
            self._counts.pop(key, None)

    def count(self, key: str) -> int:
        return self._counts.get(key, 0)


@dataclass
class Limits:
    """The limits shared by every connection and route of one server process."""

    user_ops: KeyedBuckets
    user_connections: ConnectionCounts
    address_connections: ConnectionCounts

    @classmethod
    def unlimited(cls) -> Limits:
        infinite = float("inf")
        return cls(
            KeyedBuckets(infinite, infinite), ConnectionCounts(2**62), ConnectionCounts(2**62)
        )
