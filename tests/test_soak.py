"""The soak command's per-minute figures (the run itself is recorded in docs/performance.md)."""

from __future__ import annotations

import os

from federation.tools.soak import Minute, rss_mib


def test_minute_percentiles_and_resident_memory() -> None:
    """Proves p50/p99 are read from the minute's latencies (in ms), an empty minute reads 0, and
    resident memory is read for a live process and 0 for one that is gone."""
    row = Minute(0, latencies=[i / 1000 for i in range(1, 101)])
    assert (51.0, 100.0, 0.0) == (row.percentile(0.5), row.percentile(0.99), Minute(1).percentile(0.5))
    assert rss_mib(os.getpid()) > 1
    assert 0.0 == rss_mib(2**22 + 12345)
