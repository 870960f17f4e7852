"""The pure limits of ``collab.ratelimit``: buckets per key and connection ceilings."""

from __future__ import annotations

from collab.ratelimit import ConnectionCounts, KeyedBuckets, TokenBucket


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2, burst=3, now=0)
    assert [bucket.take(0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.5) and not bucket.take(0.5)
    assert bucket.full_at(100) and not bucket.full_at(0.5)


def test_keyed_buckets_limit_each_key_apart() -> None:
    buckets = KeyedBuckets(rate=1, burst=2)
    assert [buckets.take("ada", 0) for _ in range(3)] == [True, True, False]
    assert buckets.take("bob", 0)  # ada's limit is hers alone


def test_keyed_buckets_forget_refilled_keys_once_there_are_many() -> None:
    buckets = KeyedBuckets(rate=1, burst=1)
    for index in range(KeyedBuckets.SWEEP_AT):
        assert buckets.take(f"user-{index}", 0)
    assert len(buckets) == KeyedBuckets.SWEEP_AT
    assert buckets.take("busy", 10)  # every older bucket has refilled by t=10: swept
    assert len(buckets) == 1
    assert not buckets.take("busy", 10)  # the one still spent is remembered


def test_connection_counts_hold_a_ceiling_per_key_and_release() -> None:
    counts = ConnectionCounts(limit=2)
    assert counts.acquire("ada") and counts.acquire("ada") and not counts.acquire("ada")
    assert counts.acquire("bob")
    counts.release("ada")
    assert counts.count("ada") == 1 and counts.acquire("ada")
    counts.release("bob")
    assert counts.count("bob") == 0
