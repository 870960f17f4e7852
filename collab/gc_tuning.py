"""The garbage collector's settings for a serving process.

With a thousand editors on five hundred documents, a full collection walked every object the
process held (the imported modules, the app, the engines, every connection) and stopped every
document for most of a second, once every few seconds of load; the young generation's default
threshold (700 allocations) ran a collection every few milliseconds. docs/benchmarks.md has the
timeline.
"""

from __future__ import annotations

import gc

# Allocations (net of deallocations) between two young collections; CPython's default is 700.
YOUNG_THRESHOLD = 20_000


def settle_after_startup() -> None:
    """Once the app has started: what startup built lives as long as the process, so it is
    moved out of the collector's reach (``gc.freeze``), and young collections run less often.
    Reference counting still frees everything that is not in a cycle at once."""
    gc.collect()
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, oldest)
