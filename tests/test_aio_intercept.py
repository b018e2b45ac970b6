"""FastTcpStack.intercept: TCP flows to non-own destinations decided on the event loop
(accept with a normal TcpTransport, refuse with a RST, drop), over an in-process wire."""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, List, Tuple

import pytest

import fasttcp
import fasttcp.aio
from fasttcp.aio import AioInterceptor, FastTcpStack, InterceptedFlow, QueuePacketIO
from interop_util import WhoAmI

A, B = "10.0.0.1", "10.0.0.2"
TEST_TIMEOUT = 20.0


def run(coro_fn: Callable[[], Awaitable[Any]], timeout: float = TEST_TIMEOUT) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro_fn(), timeout)
    return asyncio.run(bounded())


async def stacks(**server_settings: Any) -> Tuple[FastTcpStack, FastTcpStack]:
    wa, wb = QueuePacketIO.pair()
    client = await fasttcp.aio.start(fasttcp.Host([A, "fd00::1"]), wa)
    server = await fasttcp.aio.start(fasttcp.Host([B, "fd00::2"], **server_settings), wb)
    return client, server


def test_accepted_flows_echo_and_know_their_destination() -> None:
    async def main() -> None:
        client, server = await stacks()
        flows: List[InterceptedFlow] = []
        tasks = []

        def on_flow(flow: InterceptedFlow) -> None:
            flows.append(flow)
            tasks.append(asyncio.ensure_future(flow.accept(WhoAmI)))

        icpt = server.intercept(["10.99.0.0/16", "fd00:99::/64"], on_flow)
        assert isinstance(icpt, AioInterceptor) and icpt.prefixes[0] == "10.99.0.0/16"
        for dst, port in (("10.99.0.5", 8080), ("10.99.7.7", 443), ("fd00:99::5", 22)):
            reader, writer = await client.open_connection(dst, port)
            assert await reader.readline() == f"{dst} {port}\n".encode()
            writer.write(b"hello " + dst.encode())
            writer.write_eof()
            assert await reader.read() == b"hello " + dst.encode()
            writer.close()
            assert flows[-1].local_address[:2] == (dst, port)
            assert flows[-1].remote_address == writer.get_extra_info("sockname")
            transport, protocol = await tasks[-1]
            assert transport.get_extra_info("sockname")[:2] == (dst, port)
            assert isinstance(protocol, WhoAmI)
        assert server.host.stats()["intercept_accepted"] == 3
        icpt.close()
        # The prefixes are no longer taken: the SYN goes unanswered (not our address).
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(client.open_connection("10.99.0.5", 8080), 0.3)
        assert server.host.stats()["drop_not_for_us"] >= 1
        client.close()
        server.close()
    run(main)


def test_refused_flow_is_connection_refused_quickly() -> None:
    async def main() -> None:
        client, server = await stacks()
        server.intercept("10.99.0.0/16", lambda flow: flow.refuse())
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        with pytest.raises(ConnectionRefusedError):
            await client.open_connection("10.99.0.5", 8080)
        assert loop.time() - t0 < 0.5
        assert server.host.stats()["intercept_refused"] == 1
        client.close()
        server.close()
    run(main)


def test_dropped_flow_comes_back_with_the_syn_retransmission() -> None:
    async def main() -> None:
        client, server = await stacks()
        seen: List[InterceptedFlow] = []

        def on_flow(flow: InterceptedFlow) -> None:
            seen.append(flow)
            if len(seen) == 1:
                flow.drop()
            else:
                asyncio.ensure_future(flow.accept(WhoAmI))

        server.intercept("10.99.0.0/16", on_flow)
        reader, writer = await client.open_connection("10.99.3.3", 80)
        assert await reader.readline() == b"10.99.3.3 80\n"
        assert len(seen) == 2 and seen[0].remote_address == seen[1].remote_address
        writer.close()
        client.close()
        server.close()
    run(main)


def test_accept_after_expiry_raises_connection_error() -> None:
    async def main() -> None:
        client, server = await stacks(intercept_pending_timeout=0.1)
        got: "asyncio.Future[InterceptedFlow]" = asyncio.get_running_loop().create_future()
        server.intercept("10.99.0.0/16",
                         lambda flow: got.done() or got.set_result(flow))
        connecting = asyncio.ensure_future(client.open_connection("10.99.0.5", 80))
        flow = await got
        await asyncio.sleep(0.3)
        assert not flow.pending
        with pytest.raises(ConnectionError, match="expired"):
            await flow.accept(WhoAmI)
        connecting.cancel()
        client.close()
        server.close()
    run(main)


def test_a_failing_on_flow_refuses_the_flow() -> None:
    async def main() -> None:
        client, server = await stacks()
        errors: List[Any] = []
        asyncio.get_running_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))

        def on_flow(flow: InterceptedFlow) -> None:
            raise RuntimeError("handler bug")

        server.intercept("10.99.0.0/16", on_flow)
        with pytest.raises(ConnectionRefusedError):
            await client.open_connection("10.99.0.5", 80)
        assert errors and isinstance(errors[0]["exception"], RuntimeError)
        client.close()
        server.close()
    run(main)


def test_accept_raises_connection_error_when_the_client_gave_up() -> None:
    async def main() -> None:
        client, server = await stacks()
        got: "asyncio.Future[InterceptedFlow]" = asyncio.get_running_loop().create_future()
        server.intercept("10.99.0.0/16", lambda flow: got.done() or got.set_result(flow))
        connecting = asyncio.ensure_future(client.open_connection("10.99.0.5", 80))
        flow = await got
        connecting.cancel()                   # the client forgets its SYN-SENT connection
        await asyncio.sleep(0.05)
        # Our SYN-ACK then finds no connection at the client: its RST ends the handshake.
        with pytest.raises(ConnectionError):
            await flow.accept(WhoAmI)
        assert not server.host.connections()
        client.close()
        server.close()
    run(main)
