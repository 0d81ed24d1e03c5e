"""The listening socket ``serve --workers N`` binds (``server.https.bind_listener``): the
connections it accepts have Nagle's algorithm off, as uvicorn's own listener gives them.

Without ``TCP_NODELAY`` the last TLS record of each answer waits for the client's delayed ACK,
about 40 ms a request (measured: 20 unwrapKey/s instead of 260 at one connection)."""

from __future__ import annotations

import asyncio
import socket

from customerkey.server.https import bind_listener


def test_connections_accepted_on_the_bound_listener_have_nodelay() -> None:
    seen: list[int] = []

    async def main() -> None:
        listener = bind_listener("127.0.0.1", 0)
        accepted = asyncio.Event()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                sock = transport.get_extra_info("socket")
                seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()
                accepted.set()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        port = listener.getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(accepted.wait(), 10)
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
    assert seen == [1]
