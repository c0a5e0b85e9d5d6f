"""When to try a failed push again: exponential backoff with jitter, as pyroscope.write does,
plus the server's ``Retry-After`` (which pyroscope.write ignores, see grafana/alloy#6667).

The push task calls :func:`retry_delay` after each failed attempt and re-queues itself with
that countdown; ``None`` means stop (the caller dead-letters the push).
"""

from __future__ import annotations

import math
import random

from ..config import FileReceiverConfig, PyroscopeReceiverConfig
from ..errors import PushError, PushRejected, PushUnavailable

#: The file store's fixed policy: waits of about 1s, 2s, 4s, 8s, then give up after the 5th attempt.
FILE_MIN_BACKOFF_S = 1.0
FILE_MAX_BACKOFF_S = 30.0
FILE_MAX_RETRIES = 5

# 2**1000 seconds is beyond any cap; bounding the exponent keeps the float power from overflowing
# when max_backoff_retries is 0 (retry forever) and attempts grow without bound.
_MAX_EXPONENT = 1000


def _policy(config: PyroscopeReceiverConfig | FileReceiverConfig) -> tuple[float, float, int]:
    if isinstance(config, PyroscopeReceiverConfig):
        return (
            config.min_backoff_period.total_seconds(),
            config.max_backoff_period.total_seconds(),
            config.max_backoff_retries,
        )
    return FILE_MIN_BACKOFF_S, FILE_MAX_BACKOFF_S, FILE_MAX_RETRIES


def retry_delay(
    config: PyroscopeReceiverConfig | FileReceiverConfig,
    attempt: int,
    error: PushError,
    rand: random.Random | None = None,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None when the push should not be retried.

    ``attempt`` counts the attempts made so far (1 after the first failure). None when the error
    is a PushRejected, or when ``attempt`` has reached ``max_backoff_retries`` (0 = no limit).
    Otherwise a delay drawn from ``[min * 2**(attempt-1), min * 2**attempt)``, capped at
    ``max_backoff_period``, and never shorter than the error's ``retry_after``: the server's
    own estimate wins over the cap.
    """
    if attempt < 1:
        raise ValueError(f"attempt counts the attempts made so far and starts at 1, got {attempt}")
    if isinstance(error, PushRejected):
        return None
    min_s, max_s, max_retries = _policy(config)
    if max_retries > 0 and attempt >= max_retries:
        return None
    exponent = min(attempt - 1, _MAX_EXPONENT)
    low = min_s * 2.0**exponent
    if low >= max_s:
        delay = max_s
    else:
        draw = rand.random() if rand is not None else random.random()
        # float rounding can land exactly on 2*low; step back one ulp to keep the interval half-open
        delay = min(low + low * draw, math.nextafter(2 * low, 0.0), max_s)
    retry_after = error.retry_after if isinstance(error, PushUnavailable) else None
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay
