"""Does grpc.aio cancel deliveries that wait too long for a busy event loop?

A grpc.aio server whose event loop is blocked for `block` seconds (a saturated loop, in
the extreme) receives three calls meanwhile. gRPC core cancels those the application
has not taken up within `grpc.server_max_unrequested_time_in_server` (30 s by default).

    .venv/bin/python -m bench.grpc_unrequested 36        # 2 of 3 calls CANCELLED
    .venv/bin/python -m bench.grpc_unrequested 36 60     # all ok (option raised to 60 s)
    .venv/bin/python -m bench.grpc_unrequested 25        # all ok (under 30 s)
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from typing import Any

import grpc

from testbed.net import free_port


async def _handler(request: bytes, context: Any) -> bytes:
    return b"ok"


async def _serve(port: int, block: float, options: list[tuple[str, Any]]) -> None:
    server = grpc.aio.server(options=options)
    method = grpc.unary_unary_rpc_method_handler(_handler)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("exp.Svc", {"Call": method}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await asyncio.sleep(2)
    print(f"server: blocking its event loop for {block:.0f} s", flush=True)
    time.sleep(block)  # noqa: ASYNC251 - the point: a loop that does not get round to it
    print("server: loop free again", flush=True)
    await asyncio.sleep(3)
    await server.stop(None)


def _client(port: int, calls: int) -> None:
    time.sleep(3)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/exp.Svc/Call")
        futures = [call.future(b"x") for _ in range(calls)]
        start = time.monotonic()
        for index, future in enumerate(futures):
            try:
                future.result()
                outcome = "ok"
            except grpc.RpcError as error:
                outcome = error.code().name
            print(f"call {index}: {outcome} after {time.monotonic() - start:.1f} s", flush=True)


def main() -> None:
    block = float(sys.argv[1]) if len(sys.argv) > 1 else 36
    options = []
    if len(sys.argv) > 2:
        options = [("grpc.server_max_unrequested_time_in_server", int(sys.argv[2]))]
    port = free_port()
    client = threading.Thread(target=_client, args=(port, 3), daemon=True)
    client.start()
    asyncio.run(_serve(port, block, options))
    client.join(5)


if __name__ == "__main__":
    main()
