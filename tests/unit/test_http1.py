"""The lean HTTP/1.1 client: every response framing, connection reuse, and no answer
ever handed to the wrong request."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from tests.fakes.scripted_http import Answer, Request, scripted_http_peer
from worker.transport.http1 import Http1Pool, HttpProtocolError


def _post(pool: Http1Pool, body: bytes = b"{}") -> bytes:
    return (
        b"POST /x HTTP/1.1\r\n"
        + pool.host_header
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


async def test_keep_alive_reuses_one_connection_for_calls_one_after_another() -> None:
    async with scripted_http_peer(lambda r: Answer.of(200, r.body.upper())) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        answers = [await pool.send(_post(pool, b"call %d" % n)) for n in range(5)]
        pool.close()
    assert [a.body for a in answers] == [b"CALL %d" % n for n in range(5)]
    assert all(a.status == 200 for a in answers)
    assert peer.connections == 1


async def test_concurrent_calls_each_get_their_own_answer_on_their_own_connection() -> None:
    async with scripted_http_peer(lambda r: Answer.of(200, r.body, delay=0.01)) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        bodies = [b"call %d" % n for n in range(8)]
        answers = await asyncio.gather(*(pool.send(_post(pool, b)) for b in bodies))
        again = await asyncio.gather(*(pool.send(_post(pool, b)) for b in bodies))
        pool.close()
    assert [a.body for a in answers] == bodies
    assert [a.body for a in again] == bodies
    assert peer.connections == 8  # the second round reused the first's connections


async def test_a_204_has_no_body_and_keeps_the_connection() -> None:
    head = b"HTTP/1.1 204 No Content\r\ntraceparent: 00-x\r\ndate: now\r\n\r\n"
    async with scripted_http_peer(lambda r: Answer([head])) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        first = await pool.send(_post(pool))
        second = await pool.send(_post(pool))
        pool.close()
    assert (first.status, first.body, second.status) == (204, b"", 204)
    assert first.headers[b"traceparent"] == b"00-x"
    assert peer.connections == 1


async def test_a_chunked_answer_arriving_byte_by_byte_is_read_whole() -> None:
    wire = (
        b"HTTP/1.1 500 Internal Server Error\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\n\r\n"
    )
    async with scripted_http_peer(lambda r: Answer([bytes([b]) for b in wire])) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        answer = await pool.send(_post(pool))
        again = await pool.send(_post(pool))
        pool.close()
    assert (answer.status, answer.body) == (500, b"hello world")
    assert again.body == b"hello world"
    assert peer.connections == 1


async def test_an_answer_framed_by_the_connections_end_is_read_and_not_reused() -> None:
    async with scripted_http_peer(
        lambda r: Answer([b"HTTP/1.1 200 OK\r\n\r\nuntil the ", b"end"], close=True)
    ) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        first = await pool.send(_post(pool))
        second = await pool.send(_post(pool))
        pool.close()
    assert first.body == second.body == b"until the end"
    assert peer.connections == 2


async def test_connection_close_is_honoured() -> None:
    answer = b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok"
    async with scripted_http_peer(lambda r: Answer([answer])) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        await pool.send(_post(pool))
        await pool.send(_post(pool))
        pool.close()
    assert peer.connections == 2


async def test_a_peer_closing_mid_answer_is_a_connection_error() -> None:
    partial = b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc"
    async with scripted_http_peer(lambda r: Answer([partial], close=True)) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        with pytest.raises(ConnectionError, match="mid-response"):
            await pool.send(_post(pool))
        pool.close()


async def test_an_idle_connection_the_peer_closed_is_replaced_without_an_error() -> None:
    def answer(request: Request) -> Answer:
        # The first connection is closed by the peer right after its answer (as a
        # server's idle timeout does), without saying so in a header.
        return Answer.of(200, b"ok", close=request.connection == 1)

    async with scripted_http_peer(answer) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        await pool.send(_post(pool))
        await asyncio.sleep(0.05)  # the close reaches us
        second = await pool.send(_post(pool))
        pool.close()
    assert second.body == b"ok"
    assert peer.connections == 2


async def test_garbage_is_a_protocol_error_and_the_connection_is_dropped() -> None:
    def answer(request: Request) -> Answer:
        if request.connection == 1:
            return Answer([b"SSH-2.0-OpenSSH\r\n\r\n"])
        return Answer.of(200, b"fine")

    async with scripted_http_peer(answer) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        with pytest.raises(HttpProtocolError, match="status line"):
            await pool.send(_post(pool))
        after = await pool.send(_post(pool))
        pool.close()
    assert after.body == b"fine"
    assert peer.connections == 2


async def test_a_call_cut_short_never_hands_its_late_answer_to_the_next_call() -> None:
    def answer(request: Request) -> Answer:
        slow = request.body == b"slow"
        return Answer.of(200, request.body, delay=0.3 if slow else 0)

    async with scripted_http_peer(answer) as peer:
        pool = Http1Pool("127.0.0.1", peer.port)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await pool.send(_post(pool, b"slow"))
        fast = await pool.send(_post(pool, b"fast"))
        await asyncio.sleep(0.4)  # the slow answer arrives, on a connection since closed
        later = await pool.send(_post(pool, b"later"))
        pool.close()
    assert (fast.body, later.body) == (b"fast", b"later")
    assert peer.connections == 2


async def test_an_unreachable_peer_is_an_os_error() -> None:
    async with scripted_http_peer(lambda r: Answer.of()) as peer:
        port = peer.port
    pool = Http1Pool("127.0.0.1", port)
    with pytest.raises(ConnectionRefusedError):
        await pool.send(_post(pool))


def test_the_pool_runs_on_uvloop_as_the_worker_does() -> None:
    async def exchange() -> list[bytes]:
        async with scripted_http_peer(lambda r: Answer.of(200, r.body)) as peer:
            pool = Http1Pool("127.0.0.1", peer.port)
            bodies = [(await pool.send(_post(pool, b"%d" % n))).body for n in range(3)]
            pool.close()
        assert peer.connections == 1
        return bodies

    assert uvloop.run(exchange()) == [b"0", b"1", b"2"]
