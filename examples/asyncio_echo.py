"""The README's asyncio example: an echo server and a client, two fasttcp stacks in one
process joined by an in-process packet pipe. Run: python examples/asyncio_echo.py"""
import asyncio
import fasttcp
from fasttcp.aio import FastTcpStack, QueuePacketIO

async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()

async def main() -> None:
    wire_a, wire_b = QueuePacketIO.pair()
    async with (FastTcpStack(fasttcp.Host("10.0.0.1"), wire_a) as server_side,
                FastTcpStack(fasttcp.Host("10.0.0.2"), wire_b) as client_side):
        server = await server_side.start_server(echo, 7)
        reader, writer = await client_side.open_connection("10.0.0.1", 7)
        writer.write(b"hello, user-space TCP")
        writer.write_eof()                  # half-close: the server sees EOF
        print(await reader.read())          # b'hello, user-space TCP'
        writer.close()
        await writer.wait_closed()
        server.close()
        await server.wait_closed()

asyncio.run(main())
