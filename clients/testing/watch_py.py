"""Follows WatchTasks with the Python client until COUNT changes arrived and
prints {"events": N, "start": T0, "last": T1} (wall-clock seconds: T0 just
before the call, T1 at the last change). Used by clients/bench-streamlogs:

    python watch_py.py sync|async ADDRESS TAG CURSOR COUNT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from claudomator_client import AsyncClient, Client  # noqa: E402


class Count:
    """Counts the changes among a watch's events; done at `count`."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.events = 0
        self.start = time.time()

    def done(self, event) -> bool:
        if event.WhichOneof("event") == "change":
            self.events += 1
        return self.events == self.count

    def result(self) -> dict:
        return {"events": self.events, "start": self.start, "last": time.time()}


def follow_sync(address: str, tag: str, cursor: str, count: int) -> dict:
    with Client(address, call_timeout=None) as client:
        client.get_system_status()  # connect first, as every watcher does
        counted = Count(count)
        stream = client.watch_tasks(tag=tag, cursor=cursor)
        next(e for e in stream if counted.done(e))
        stream.cancel()
        return counted.result()


async def follow_async(address: str, tag: str, cursor: str, count: int) -> dict:
    async with AsyncClient(address, call_timeout=None) as client:
        await client.get_system_status()
        counted = Count(count)
        stream = client.watch_tasks(tag=tag, cursor=cursor)
        async for event in stream:
            if counted.done(event):
                break
        stream.cancel()
        return counted.result()


def main() -> None:
    mode, address, tag, cursor, count = sys.argv[1:6]
    if mode == "sync":
        result = follow_sync(address, tag, cursor, int(count))
    else:
        result = asyncio.run(follow_async(address, tag, cursor, int(count)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
