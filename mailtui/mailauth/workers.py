"""The threads that sign and verify DKIM: CPU work, kept apart from the disk's.

The event loop's default executor runs the server's blocking disk work
(writes, fsyncs), each job holding its thread for milliseconds. A signature
(0.4 ms, most of it in OpenSSL without the GIL) queued behind those waited
7 ms on average in the relay benchmark, in the middle of the path to the
250, and cost a quarter of the throughput; in threads of its own it waits
for nothing. Two threads: one per core of the smallest machine mailtui is
measured on.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Callable, TypeVar

T = TypeVar("T")
WORKERS = 2
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mailtui-dkim")


async def run(fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` in a DKIM thread."""
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)
