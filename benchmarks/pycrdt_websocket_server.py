"""pycrdt-websocket's own server (in memory, its defaults) for the yjs scenario's comparison:
python pycrdt_websocket_server.py <port>. Prints "ready" once it listens."""

from __future__ import annotations

import asyncio
import sys

import uvicorn
from pycrdt.websocket import ASGIServer, WebsocketServer


async def main(port: int) -> None:
    websocket_server = WebsocketServer()
    config = uvicorn.Config(
        ASGIServer(websocket_server), host="127.0.0.1", port=port, log_level="warning"
    )
    server = uvicorn.Server(config)
    async with websocket_server:
        serving = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110  (uvicorn offers a flag, no event)
            await asyncio.sleep(0.05)  # polling uvicorn's start flag
        print("ready", flush=True)
        await serving


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
