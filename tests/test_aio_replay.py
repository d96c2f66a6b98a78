"""Interop by replay, through gofast.aio: test_replay.py's golden vectors
(tests/vectors) played from a raw socket on the loop against a
``gofast.aio.Transport``, asserting what the sync replay asserts.

* Every frame of frames.json that a peer can send reaches the loop's
  handlers (POSTs, REQUESTs answered by the handler's return value,
  streams read with ``async for``) or is dropped and counted.
* Each conversation-*.json: the Go SERVER's recorded bytes against our
  asyncio CLIENT (``await`` handshake, post, request, stream, ping), then
  the Go CLIENT's bytes against our asyncio SERVER, whose handlers are
  plain functions or ``async def`` ones. What we send must match the
  recording frame for frame (test_replay.Matcher: kinds, ids, payloads,
  compression layers, opaques; byte for byte without compression), and
  logs and counters must match the recording at the end.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import gofast
import gofast.aio
import wire
from aio_wire import AInbox, araw_client, araw_server, until
from gofast import BinMessage
from test_replay import (
    C2S,
    CONVERSATIONS,
    HEARTBEAT_PERIOD,
    S2C,
    TIMEOUT,
    Matcher,
    compare_stats,
    load_conversation,
    load_vectors,
)
from wire import FINISH, REQUEST, STREAM_START, WHOAMI_ID, Frame, decode_ping, decode_whoami, retag


async def settled_stats(t: gofast.aio.Transport, conv: Any, side: str, seen: int) -> None:
    """test_replay.compare_stats, once n_txbyte has caught up (awaited here,
    so the loop is not held while the writer finishes its last write)."""
    await until(lambda: t.stats()["n_txbyte"] >= seen, TIMEOUT, "n_txbyte to settle")
    recorded = (conv.client if side == "client" else conv.server)["stats_before_close"]
    compare_stats(t, recorded, conv, seen)


# ---------------------------------------------------------------------------
# frames.json: the loop's handlers get what the reference sends


async def test_aio_transport_decodes_every_vector() -> None:
    vectors = load_vectors()
    posts = AInbox()
    streams = AInbox()

    def default(stream: Any, msg: BinMessage) -> Any:
        if stream is None:
            posts.append((msg.id, msg.data))
            return None
        if not isinstance(stream, gofast.aio.Stream):  # a REQUEST: the reply
            return BinMessage(msg.id, msg.data)
        streams.append(("start", stream.opaque, msg.id, msg.data))

        async def converse() -> None:  # our side closes when it returns
            async for m in stream:
                streams.append(("msg", m.id, m.data))
            streams.append(("end",))

        return converse()

    async with araw_server(
        {"tags": "gzip,lzw"}, setup=lambda t: t.default_handler(default), opaque_start=900
    ) as (raw, t):
        counted = {"post": 0, "request": 0, "stream": 0}
        dropped: list[int] = []
        for v in vectors:
            kind = v["kind"]
            frame = bytes.fromhex(v["frame_hex"])
            data = bytes.fromhex(v.get("msg_data_hex", ""))
            msg_id = v.get("msg_id")
            if kind == "post" and msg_id == wire.HEARTBEAT_ID:
                beats = t.stats()["n_rxbeats"]
                await raw.send(frame)
                await until(lambda b=beats: t.stats()["n_rxbeats"] == b + 1, TIMEOUT, v["name"])
            elif kind == "post":
                n = len(posts.snapshot())
                await raw.send(frame)
                assert (await posts.wait_for(n + 1, TIMEOUT))[n] == (msg_id, data), v["name"]
            elif kind in ("request", "response"):
                await raw.send(frame)
                reply = await raw.read_frame(TIMEOUT)
                assert (reply.kind, reply.opaque) == (REQUEST, v["opaque"]), v["name"]
                if msg_id == WHOAMI_ID:
                    assert decode_whoami(reply.data).name == "lib-client", v["name"]
                else:
                    assert (reply.id, reply.data) == (msg_id, data), v["name"]
            elif kind in ("stream_start", "stream_msg"):
                n = len(streams.snapshot())
                if kind == "stream_msg":  # open a stream on its opaque first
                    await raw.send_frame(STREAM_START, v["opaque"], 77, b"opener")
                    n += 1
                await raw.send(frame)
                await raw.send(wire.encode_finish(v["opaque"]))
                got = (await streams.wait_for(n + 2, TIMEOUT))[n:]
                want = (
                    ("start", v["opaque"], msg_id, data)
                    if kind == "stream_start"
                    else ("msg", msg_id, data)
                )
                assert got == [want, ("end",)], v["name"]
                fin = await raw.read_frame(TIMEOUT)
                assert (fin.kind, fin.opaque) == (FINISH, v["opaque"]), v["name"]
                await until(lambda: t._t._exchanges_in_use() == (0, 0), TIMEOUT, v["name"])
            else:  # a lone FINISH belongs to no stream: a counted drop
                assert kind == "finish"
                await raw.send(frame)
                dropped.append(len(frame))
                continue
            counted[
                "stream" if kind.startswith("stream") else kind.replace("response", "request")
            ] += 1
        assert counted == {"post": 29, "request": 26, "stream": 12}
        assert await raw.ping("sync") == b"sync"  # every frame before it was handled
        s = t.stats()
        assert (s["n_mdrops"], s["n_dropped"]) == (len(dropped), sum(dropped)) == (8, 84)
        assert s["n_handler_errors"] == 0
        assert t._t._exchanges_in_use() == (0, 0)


# ---------------------------------------------------------------------------
# Conversations


@pytest.mark.parametrize("name", CONVERSATIONS)
async def test_replay_our_aio_client_against_the_reference_server(name: str) -> None:
    conv = load_conversation(name)
    our_range = conv.range_of("client")
    m = Matcher(conv, our_range)
    omap: dict[int, int] = {}  # recorded client opaque -> the one we picked
    log: list[str] = []

    def answer(rec: Frame) -> bytes:
        """A server frame of the recording, on the opaque we picked."""
        return retag(rec, omap[rec.opaque]) if rec.opaque in omap else rec.raw

    async with araw_server(
        conv.settings("client"),
        handshake=False,
        name=conv.client["name"],
        version=conv.client["version64"],
    ) as (raw, t):
        # handshake: ours asks first; the server's request goes out after it
        c_req, c_resp = conv.handshake_frames(C2S, our_range)
        s_req, s_resp = conv.handshake_frames(S2C, conv.range_of("server"))
        done = asyncio.ensure_future(t.handshake(TIMEOUT))
        omap[c_req.opaque] = m.same(await raw.read_frame(TIMEOUT), c_req, opaque=None)
        await raw.send(s_req.raw)
        m.same(await raw.read_frame(TIMEOUT), c_resp, opaque=s_req.opaque)
        await raw.send(answer(s_resp))
        async with asyncio.timeout(TIMEOUT):
            peer = await done
        server_whoami = decode_whoami(s_req.data)
        assert (peer.name, int(peer.version), peer.buffersize, ",".join(peer.tags)) == tuple(
            server_whoami
        )

        # POST "hello"
        [rec] = conv.sent(C2S, "post")
        await t.post(BinMessage(rec.id, rec.data))
        m.same(await raw.read_frame(TIMEOUT), rec, opaque=None)

        # REQUEST "what", answered "re:what"
        [rec], [rec_resp] = conv.sent(C2S, "request"), conv.sent(S2C, "request")
        reply = asyncio.ensure_future(t.request(BinMessage(rec.id, rec.data), None, TIMEOUT))
        omap[rec.opaque] = m.same(await raw.read_frame(TIMEOUT), rec, opaque=None)
        await raw.send(answer(rec_resp))
        async with asyncio.timeout(TIMEOUT):
            got = await reply
        assert (got.id, got.data) == (rec_resp.id, rec_resp.data)
        log.append(f"response {got.data.decode()}")

        # STREAM: opened by us, s0..s2 from the server, c0..c2 from us,
        # closed by us, then by the server
        start, *c_msgs, c_fin = conv.sent(C2S, "stream")
        *s_msgs, s_fin = conv.sent(S2C, "stream")
        stream = t.stream(BinMessage(start.id, start.data))
        omap[start.opaque] = m.same(await raw.read_frame(TIMEOUT), start, opaque=None)
        assert stream.opaque == omap[start.opaque]
        for rec in s_msgs:
            await raw.send(answer(rec))
        received = [await stream.recv(TIMEOUT) for _ in s_msgs]
        assert [(x.id, x.data) for x in received if x] == [(r.id, r.data) for r in s_msgs]
        for rec in c_msgs:
            await stream.send(BinMessage(rec.id, rec.data))
        for rec in c_msgs:
            m.same(await raw.read_frame(TIMEOUT), rec, opaque=omap[rec.opaque])
        await stream.close()
        m.same(await raw.read_frame(TIMEOUT), c_fin, opaque=omap[c_fin.opaque])
        assert t._t._exchanges_in_use() == (1, 0), (
            "the stream ended before the server closed its side"
        )
        await raw.send(answer(s_fin))
        assert await stream.recv(TIMEOUT) is None
        assert stream.error is None
        words = [x.data.decode() for x in received if x] + ["closed-by-server"]
        log.append(f"stream got [{' '.join(words)}]")
        await until(
            lambda: t._t._exchanges_in_use() == (0, 0), TIMEOUT, "the stream's opaque to come back"
        )

        # ping "hello"
        [rec], [rec_pong] = conv.sent(C2S, "ping"), conv.sent(S2C, "ping")
        echo = asyncio.ensure_future(t.ping(decode_ping(rec.data).decode(), TIMEOUT))
        omap[rec.opaque] = m.same(await raw.read_frame(TIMEOUT), rec, opaque=None)
        await raw.send(answer(rec_pong))
        async with asyncio.timeout(TIMEOUT):
            log.append(f"ping {await echo}")

        # two heartbeats (counters 0 and 1)
        beats = conv.sent(C2S, "heartbeat")
        t.send_heartbeat(HEARTBEAT_PERIOD)
        try:
            for rec in beats:
                m.same(await raw.read_frame(TIMEOUT), rec, opaque=None)
        finally:
            t.send_heartbeat(None)

        assert log == conv.client["log"]
        await settled_stats(t, conv, "client", raw.received)
        assert t._t._exchanges_in_use() == (0, 0)


def plain_handlers(log: AInbox, s_msgs_data: list[bytes]) -> dict[str, Any]:
    """The sync replay's handlers, run on the loop: a callback per stream."""

    def on_post(stream: Any, msg: BinMessage) -> None:
        log.append(f"post {msg.data.decode()}")

    def on_request(stream: Any, msg: BinMessage) -> None:
        log.append(f"request {msg.data.decode()}")
        stream.respond(BinMessage(msg.id, b"re:" + msg.data))

    def on_stream(stream: gofast.aio.Stream, msg: BinMessage) -> Any:
        log.append(f"stream-start {msg.data.decode()}")
        for data in s_msgs_data:
            stream.send(BinMessage(msg.id, data))  # room in the queue: sent now

        def callback(x: BinMessage | None) -> Any:
            if x is None:
                log.append("stream closed by client")
                return stream.close()  # a coroutine: run as a task
            log.append(f"stream-msg {x.data.decode()}")
            return None

        return callback

    return {"post": on_post, "request": on_request, "stream": on_stream}


def async_handlers(log: AInbox, s_msgs_data: list[bytes]) -> dict[str, Any]:
    """The same conversation as an asyncio service writes it: ``async def``
    handlers that await, return the reply, and read the stream with
    ``async for`` (our side closes when the handler returns)."""

    async def on_post(stream: Any, msg: BinMessage) -> None:
        await asyncio.sleep(0)
        log.append(f"post {msg.data.decode()}")

    async def on_request(stream: Any, msg: BinMessage) -> BinMessage:
        await asyncio.sleep(0)
        log.append(f"request {msg.data.decode()}")
        return BinMessage(msg.id, b"re:" + msg.data)

    async def on_stream(stream: gofast.aio.Stream, msg: BinMessage) -> None:
        log.append(f"stream-start {msg.data.decode()}")
        for data in s_msgs_data:
            await stream.send(BinMessage(msg.id, data))
        async for x in stream:
            log.append(f"stream-msg {x.data.decode()}")
        log.append("stream closed by client")

    return {"post": on_post, "request": on_request, "stream": on_stream}


@pytest.mark.parametrize("handlers", [plain_handlers, async_handlers], ids=["plain", "async"])
@pytest.mark.parametrize("name", CONVERSATIONS)
async def test_replay_our_aio_server_against_the_reference_client(name: str, handlers: Any) -> None:
    conv = load_conversation(name)
    our_range = conv.range_of("server")
    m = Matcher(conv, our_range)
    log = AInbox()
    on = handlers(log, [f.data for f in conv.sent(S2C, "stream")[:-1]])
    [post] = conv.sent(C2S, "post")
    [req] = conv.sent(C2S, "request")
    start = conv.sent(C2S, "stream")[0]

    def setup(t: gofast.aio.Transport) -> None:
        t.subscribe(post.id, on["post"])
        t.subscribe(req.id, on["request"])
        t.subscribe(start.id, on["stream"])

    smap: dict[int, int] = {}  # recorded server opaque -> the one we picked
    async with araw_client(
        conv.settings("server"),
        setup=setup,
        handshake=False,
        name=conv.server["name"],
        version=conv.server["version64"],
    ) as (raw, t):
        c_req, c_resp = conv.handshake_frames(C2S, conv.range_of("client"))
        s_req, s_resp = conv.handshake_frames(S2C, our_range)
        done = asyncio.ensure_future(t.handshake(TIMEOUT))
        smap[s_req.opaque] = m.same(await raw.read_frame(TIMEOUT), s_req, opaque=None)
        await raw.send(c_req.raw)
        m.same(await raw.read_frame(TIMEOUT), s_resp, opaque=c_req.opaque)
        await raw.send(retag(c_resp, smap[c_resp.opaque]))
        async with asyncio.timeout(TIMEOUT):
            peer = await done
        client_whoami = decode_whoami(c_req.data)
        assert (peer.name, int(peer.version), peer.buffersize, ",".join(peer.tags)) == tuple(
            client_whoami
        )

        # POST "hello"
        await raw.send(post.raw)
        await log.wait_for(1, TIMEOUT)

        # REQUEST "what" -> "re:what" on the request's opaque
        [rec_resp] = conv.sent(S2C, "request")
        await raw.send(req.raw)
        m.same(await raw.read_frame(TIMEOUT), rec_resp, opaque=req.opaque)

        # STREAM opened by the client
        start, *c_msgs, c_fin = conv.sent(C2S, "stream")
        *s_msgs, s_fin = conv.sent(S2C, "stream")
        await raw.send(start.raw)
        for rec in s_msgs:
            m.same(await raw.read_frame(TIMEOUT), rec, opaque=start.opaque)
        for rec in c_msgs:
            await raw.send(rec.raw)
        await raw.send(c_fin.raw)
        m.same(await raw.read_frame(TIMEOUT), s_fin, opaque=start.opaque)
        await until(lambda: t._t._exchanges_in_use() == (0, 0), TIMEOUT, "the stream to end")

        # ping "hello"
        [rec], [rec_pong] = conv.sent(C2S, "ping"), conv.sent(S2C, "ping")
        await raw.send(rec.raw)
        m.same(await raw.read_frame(TIMEOUT), rec_pong, opaque=rec.opaque)

        # two heartbeats from the client
        beats = conv.sent(C2S, "heartbeat")
        for rec in beats:
            await raw.send(rec.raw)
        await until(lambda: t.stats()["n_rxbeats"] == len(beats), TIMEOUT, "heartbeats")
        assert t.silent_since() is not None

        assert log.snapshot() == conv.server["log"]
        await settled_stats(t, conv, "server", raw.received)
        assert t._t._exchanges_in_use() == (0, 0)
