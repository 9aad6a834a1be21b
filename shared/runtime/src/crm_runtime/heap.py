"""The garbage collector and a long-running service process.

A service imports and builds most of what it will ever hold at startup: modules, the app and its
routes, pydantic models, pools. The cyclic collector's full collections walk all of it again and
again, and each walk pauses the event loop (tens of milliseconds in a service, a latency tail).
``settle()`` is called once startup is done: it collects what startup left behind, then moves
everything that survived out of the collector's sight (``gc.freeze``). What the process
allocates afterwards is collected as usual.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect, then exclude the survivors of startup from later collections."""
    gc.collect()
    gc.freeze()
