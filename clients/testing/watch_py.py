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


def follow_sync(address: str, tag: str, cursor: str, count: int) -> dict:
    with Client(address, call_timeout=None) as client:
        client.get_system_status()  # connect first, as every watcher does
        start = time.time()
        events = 0
        stream = client.watch_tasks(tag=tag, cursor=cursor)
        for event in stream:
            if event.WhichOneof("event") == "change":
                events += 1
                if events == count:
                    break
        last = time.time()
        stream.cancel()
    return {"events": events, "start": start, "last": last}


async def follow_async(address: str, tag: str, cursor: str, count: int) -> dict:
    async with AsyncClient(address, call_timeout=None) as client:
        await client.get_system_status()
        start = time.time()
        events = 0
        stream = client.watch_tasks(tag=tag, cursor=cursor)
        async for event in stream:
            if event.WhichOneof("event") == "change":
                events += 1
                if events == count:
                    break
        last = time.time()
        stream.cancel()
    return {"events": events, "start": start, "last": last}


def main() -> None:
    mode, address, tag, cursor, count = sys.argv[1:6]
    if mode == "sync":
        result = follow_sync(address, tag, cursor, int(count))
    else:
        result = asyncio.run(follow_async(address, tag, cursor, int(count)))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
