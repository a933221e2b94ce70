"""Where DKIM's CPU work runs: on the event loop for small messages, in threads of its own for large ones.

Signing or verifying a 4 KiB message takes 0.3-0.5 ms of CPU, most of it
Python holding the GIL (dkimpy's canonicalisation), about 0.04 ms more per
KiB. Handed to a thread on a busy server, that work waits for the GIL each
time it takes it back (after the RSA operation, after hashing): the event
loop's thread keeps the GIL until the interpreter takes it away, every 5 ms.
Measured in the MX benchmark, a 0.3 ms verification in a thread took 6 ms
from start to end, and a signature in the default executor (queued behind
fsyncs as well) lengthened the relay's DATA-to-250 by 8 ms. So messages up
to :data:`INLINE_MAX` are signed and verified on the loop - at most about
1 ms, less than the hand-off costs; larger ones, where the work outweighs
the wait, go to two threads of their own (never behind the disk work of the
default executor).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from typing import Callable, TypeVar

T = TypeVar("T")
INLINE_MAX = 16 * 1024       # octets: 1 ms of DKIM work on the 2-core CI machine
WORKERS = 2
_pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="mailtui-dkim")


async def run(size: int, fn: Callable[..., T], *args) -> T:
    """``fn(*args)``, DKIM work on a message of ``size`` octets: here if it is small, else in a DKIM thread."""
    if size <= INLINE_MAX:
        return fn(*args)
    return await asyncio.get_running_loop().run_in_executor(_pool, fn, *args)
