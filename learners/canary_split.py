"""Which decisions a canary version serves: a split on the decision id that every language computes
alike.

A decision is in the canary's share when the first 8 bytes of the SHA-256 of its id (UTF-8), read as
a big-endian unsigned 64-bit integer, are below ``floor(share * 2**64)``. ``share * 2**64`` is exact
in binary floating point (multiplying by a power of two only moves the exponent), so the threshold
is the same in every language: Java ``new BigDecimal(share).multiply(new
BigDecimal(BigInteger.ONE.shiftLeft(64))).toBigInteger()`` against ``new BigInteger(1,
Arrays.copyOf(sha256, 8))``; Node ``BigInt(Math.floor(share * 2 ** 64))`` against
``createHash("sha256").update(id, "utf8").digest().readBigUInt64BE(0)``.

So one decision never flips between versions while a canary runs (a retried request, a service on
another host: the same id, the same version), and a larger share only adds decisions to the
canary's.

>>> in_canary("d-1", 0.5), in_canary("d-1", 0.5)
(True, True)
>>> sum(in_canary(f"d{n}", 0.1) for n in range(10_000))
988
"""

from __future__ import annotations

import hashlib

SPLIT_BITS = 64


def split_point(decision_id: str) -> int:
    """The decision's place in the split: the first 8 bytes of SHA-256(UTF-8 id), big-endian, in [0,
    2**64).

    >>> split_point("d-1")
    522878393446021804
    """
    return int.from_bytes(hashlib.sha256(decision_id.encode()).digest()[:8], "big")


def threshold(share: float) -> int:
    """``floor(share * 2**64)``: the split points below it are the canary's.

    >>> threshold(0.5) == 2**63, threshold(0.0), threshold(1.0) == 2**64
    (True, 0, True)
    """
    return int(share * 2**SPLIT_BITS)


def in_canary(decision_id: str, share: float) -> bool:
    """Whether the canary version serves the decision ``decision_id`` when it serves ``share`` of
    them."""
    return split_point(decision_id) < threshold(share)
