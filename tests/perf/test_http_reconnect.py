"""`bertserve perf`'s HTTP client behind a proxy that closes keep-alive connections (nginx's
keepalive_requests, 1000 by default): a reply with `Connection: close` ends that connection,
and the next request goes on a new one instead of failing."""

from __future__ import annotations

import asyncio

from bertserve.perf.http_transport import HttpTransport

REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


async def test_a_closed_keepalive_connection_is_replaced() -> None:
    accepted = 0

    async def one_reply_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        nonlocal accepted
        accepted += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(REPLY)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(one_reply_per_connection, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transport = HttpTransport(f"127.0.0.1:{port}", "m", "")
    connection = await transport.connect()
    request = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
    try:
        outcomes = [await connection.infer(request) for _ in range(3)]
    finally:
        connection.close()
        await transport.close()
        server.close()
        await server.wait_closed()
    assert [ok for ok, _, _ in outcomes] == [True, True, True]
    assert accepted == 3
