"""Memory given back to the OS after a burst (issue 9 item 4). Imported before ``_cello`` loads.

- Rust allocations use mimalloc. Freed pages go back after its purge delay, but only when a
  thread later allocates or collects; the extension's janitor (``python/src/memory.rs``)
  collects while requests flow and forces a full collection once the process turns idle,
  so an idle server gives a burst back without purging on every free (which
  ``MIMALLOC_PURGE_DELAY=0`` did, at 6-9 % of throughput).
- ``MIMALLOC_ALLOW_THP=0`` keeps transparent huge pages out of this process: mimalloc's
  purge gives back 64 KiB pieces, and a piece inside a 2 MiB huge page stays resident (the
  kernel splits such a page only under memory pressure), which kept 8-14 MiB after a burst
  of 10 MB uploads. mimalloc reads it when the extension loads, so it is set here, first;
  a value already in the environment wins.
- Python objects of 1 MiB and more (request bodies as ``bytes``) get their own mapping from
  glibc, unmapped when freed: glibc's dynamic threshold otherwise moves them into per-thread
  arenas after the first one, and those stay at their peak.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("MIMALLOC_ALLOW_THP", "0")

_M_MMAP_THRESHOLD = -3


def _tune_glibc() -> None:
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import platform

    if platform.libc_ver()[0] != "glibc":
        return
    try:
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):
        pass


_tune_glibc()
