"""The garbage collector and a long-running service process.

A service imports and builds most of what it will ever hold at startup: modules, the app and its
routes, pydantic models, pools. The cyclic collector's full collections walk all of it again and
again, and each walk pauses the event loop (tens of milliseconds in a service, a latency tail).
``settle()`` is called once startup is done: it collects what startup left behind, then moves
everything that survived out of the collector's sight (``gc.freeze``). What the process
allocates afterwards is collected as usual, but the young generation less often: at the default
(a collection every 700 allocations) each one mostly walks the objects of requests still in
flight and promotes them, so the next generations walk them again — ~5% of a create-lead's CPU.
"""

from __future__ import annotations

import gc


def settle() -> None:
    """Collect, then exclude the survivors of startup from later collections."""
    gc.collect()
    gc.freeze()
    # Young: every 10,000 allocations (a few requests' worth); middle: every 20 of those; full:
    # every 10 middle ones (and, as always, only once the long-lived heap has grown by 25%).
    gc.set_threshold(10_000, 20, 10)
