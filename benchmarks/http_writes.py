"""One write a response against two (`http_connection._HeadWithBody`), on loopback: a uvloop
server answers each 1-byte request with a 200-byte head and a body, written as two
`transport.write` calls (uvicorn's way) or one `writelines` (bertserve's), to `--clients`
clients that each keep one request in flight; modes alternate round by round. Reports the
server process's CPU a response and the clients' round trip, per mode.

    python benchmarks/http_writes.py [--body 3072] [--responses 20000] [--clients 1,16]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import statistics
import sys
import time

import uvloop

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n" + b"x" * 140 + b"\r\n\r\n"


def _serve(mode: str, body_size: int, ready: object, port_out: object, done: object) -> None:
    body = b"b" * body_size

    class Answer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            for _ in range(len(data)):
                if mode == "two":
                    self.transport.write(HEAD)  # type: ignore[attr-defined]
                    self.transport.write(body)  # type: ignore[attr-defined]
                else:
                    self.transport.writelines((HEAD, body))  # type: ignore[attr-defined]

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", 0)
        port_out.value = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        ready.set()  # type: ignore[attr-defined]
        while not done.is_set():  # type: ignore[attr-defined]
            await asyncio.sleep(0.01)
        usage = resource.getrusage(resource.RUSAGE_SELF)
        port_out.value = int((usage.ru_utime + usage.ru_stime) * 1e6)  # type: ignore[attr-defined]
        server.close()

    uvloop.run(main())


async def _drive(port: int, clients: int, responses: int, size: int) -> list[float]:
    async def one(count: int) -> list[float]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        trips = []
        for _ in range(count):
            t0 = time.perf_counter()
            writer.write(b"x")
            await reader.readexactly(len(HEAD) + size)
            trips.append(time.perf_counter() - t0)
        writer.close()
        return trips

    results = await asyncio.gather(*(one(responses // clients) for _ in range(clients)))
    return [t for r in results for t in r]


def measure(mode: str, clients: int, responses: int, size: int) -> tuple[float, float]:
    """(server CPU us a response, client round trip p50 us)."""
    ctx = multiprocessing.get_context("spawn")
    ready, done, port = ctx.Event(), ctx.Event(), ctx.Value("q", 0)
    process = ctx.Process(target=_serve, args=(mode, size, ready, port, done))
    process.start()
    ready.wait(30)
    trips = uvloop.run(_drive(port.value, clients, responses, size))
    done.set()
    process.join(30)
    return port.value / len(trips), statistics.median(trips) * 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--body", type=int, default=3072)
    parser.add_argument("--responses", type=int, default=20000)
    parser.add_argument("--clients", default="1,16")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    for clients in (int(c) for c in args.clients.split(",")):
        for _ in range(args.rounds):
            for mode in ("two", "one"):
                cpu, p50 = measure(mode, clients, args.responses, args.body)
                print(f"clients {clients:3d}  {mode:3s} write(s): server CPU {cpu:6.1f} us a "
                      f"response, round trip p50 {p50:6.1f} us", flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
