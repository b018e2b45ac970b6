"""A BufferedProtocol receives through recv_into, byte-exact, with pause/resume."""
import asyncio
import os

from test_aio import A, queue_stacks, run


class Collector(asyncio.BufferedProtocol):
    def __init__(self) -> None:
        self.buf = bytearray(1000)
        self.data = bytearray()
        self.calls = 0
        self.eof = asyncio.get_running_loop().create_future()
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def get_buffer(self, sizehint: int):
        assert sizehint > 0
        return memoryview(self.buf)[:min(sizehint, 777)]   # smaller than asked: many calls

    def buffer_updated(self, nbytes: int) -> None:
        self.calls += 1
        self.data += self.buf[:nbytes]
        if self.calls % 50 == 0:
            self.transport.pause_reading()
            asyncio.get_running_loop().call_later(0.001, self.transport.resume_reading)

    def eof_received(self) -> bool:
        self.eof.set_result(None)
        return False

    def connection_lost(self, exc) -> None:
        pass


def test_buffered_protocol_gets_every_byte_through_recv_into():
    async def main():
        sa, sb = await queue_stacks()
        srv = await sa.create_server(Collector, 9000)
        reader, writer = await sb.open_connection(A, 9000)
        msg = os.urandom(2 << 20)
        writer.write(msg)
        writer.write_eof()
        await writer.drain()
        proto = next(iter(srv._transports)).get_protocol()
        await asyncio.wait_for(proto.eof, 30)
        assert bytes(proto.data) == msg
        assert proto.calls >= len(msg) // 777
        writer.close()
        srv.close()
        sa.close()
        sb.close()
    run(main)
