"""``request.stream()``: the request body as an async iterator of ``bytes`` chunks.

Bodies up to 1 MiB arrive in one buffer; bigger ones were written to a temporary file by the
server while they arrived (never held in memory) and are read from it here in chunks. The
file is removed when the request is done.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

CHUNK = 256 * 1024


async def stream(data: bytes | None, path: str | None, chunk_size: int = CHUNK) -> AsyncIterator[bytes]:
    if path is None:
        if data:
            yield data
        return
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            yield chunk
