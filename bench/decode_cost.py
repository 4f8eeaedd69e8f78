"""What the consumer's hot path costs per message, from payload to COPY line, in-process.

The path is ``consumer.batch.build_batch`` (``contract.decode``: orjson, then the fast field
checks) and ``consumer.store.copy_line``. The baseline is the standard library's json.loads
alone, on the same payloads in the same run: what parsing cost before orjson, without any
validation or formatting.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence

from candlestack.consumer.batch import Record, build_batch
from candlestack.consumer.store import copy_line


def copy_lines(payloads: Sequence[bytes]) -> str:
    """What the consumer writes to COPY for a batch of valid trades."""
    records = [Record("t", 0, n, None, value) for n, value in enumerate(payloads)]
    batch = build_batch(records)
    if len(batch.trades) != len(payloads):
        raise AssertionError(f"{len(payloads) - len(batch.trades)} of the benchmark's messages were refused")
    return "".join(map(copy_line, batch.trades))


def micro(payloads: Sequence[bytes], *, rounds: int = 3) -> dict[str, float]:
    """Best-of-``rounds`` µs per message: json.loads alone, and the consumer's path."""

    def best(fn: Callable[[Sequence[bytes]], object]) -> float:
        times = []
        for _ in range(rounds):
            began = time.perf_counter()
            fn(payloads)
            times.append(time.perf_counter() - began)
        return min(times) / len(payloads) * 1e6

    return {"json_loads_us": best(lambda p: [json.loads(v) for v in p]), "current_us": best(copy_lines)}
