"""Raw-socket fuzzing of the gateway (this is not an app): inputs from a seeded mutator over
a corpus and from Hypothesis strategies, sent to a real server many connections at a time,
and the rules every answer must keep.

Shared by tests/integration/test_gateway_fuzz.py (the CI variant) and
scripts/gateway_fuzz.py (the long one).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import socket
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from hypothesis import strategies as st

from supports.gateway_site import Site
from supports.raw_http import Reply, ResponseParser, request, websocket_upgrade
from supports.smuggling_corpus import ATTACKS

FUNCTIONS = ("guarded", "guarded_server", "open_ws", "plain")
GUARDED = ("guarded", "guarded_server")

# What the gateway itself may answer with (a `ketch:` body): refusals. A 5xx from the gateway
# would mean a bug, or a container that failed, which these never do.
PLATFORM_STATUSES = frozenset({400, 401, 404, 405, 408, 413, 429, 431, 501, 505})


@dataclass
class Input:
    port: int
    pieces: list[bytes]

    @property
    def data(self) -> bytes:
        return b"".join(self.pieces)


@dataclass
class Outcome:
    """Counts over a run, and the inputs that broke a rule (with what came back)."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    closed: int = 0
    upgraded: int = 0
    violations: list[tuple[str, Input, Reply]] = field(default_factory=list)

    def add(self, other: Outcome) -> None:
        self.sent += other.sent
        self.statuses.update(other.statuses)
        self.closed += other.closed
        self.upgraded += other.upgraded
        self.violations += other.violations


_STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def judge(inp: Input, reply: Reply, outcome: Outcome) -> None:
    """Check one answer against the rules; record what broke them."""
    outcome.sent += 1
    outcome.closed += reply.closed
    outcome.upgraded += reply.upgraded
    if b"HEAD" in inp.data:
        # A response to HEAD has no body, which a parser told nothing of the request cannot
        # know: its status lines are all there is to judge.
        for status in _STATUS_LINE.findall(reply.raw):
            outcome.statuses[int(status)] += 1
            if int(status) >= 500 and int(status) not in (501, 505):
                outcome.violations.append((f"answered {int(status)} (HEAD)", inp, reply))
        return
    if reply.garbage:
        outcome.violations.append(("bytes that are no HTTP response", inp, reply))
    for r in reply.responses:
        outcome.statuses[r.status] += 1
        if r.text.startswith("ketch:"):
            if r.status not in PLATFORM_STATUSES:
                outcome.violations.append((f"the gateway answered {r.status}", inp, reply))
        elif r.status >= 500 and not (r.status == 501 and b"Unsupported method" in r.body):
            outcome.violations.append((f"an app answered {r.status}", inp, reply))
        elif r.status == 400 and b"Invalid HTTP request" in r.body:
            # The container's server could not parse what the gateway sent it.
            outcome.violations.append(("the gateway forwarded a malformed request", inp, reply))


# -- sending ------------------------------------------------------------------------------


async def send(inp: Input, idle: float) -> Reply:
    """Send one input on a connection of its own; read until the gateway closes, a 101, or
    `idle` seconds without a byte (then half-close, which the gateway takes as goodbye)."""
    reply = Reply()
    parser = ResponseParser(reply)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", inp.port)
    except OSError as exc:
        raise AssertionError(f"the gateway refused a connection: {exc}") from None
    sock = writer.get_extra_info("socket")
    # Closed with a reset, not FIN: no TIME_WAIT left behind, so long runs keep their ports.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    try:
        try:
            for piece in inp.pieces:
                writer.write(piece)
                await writer.drain()
        except OSError:
            pass  # refused mid-way: what was answered is still read
        half_closed = False
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(65536), idle)
            except TimeoutError:
                if half_closed:
                    break
                half_closed = True
                with contextlib.suppress(OSError):
                    writer.write_eof()
                continue
            except OSError:
                reply.closed = True
                break
            if not chunk:
                reply.closed = True
                break
            parser.feed(chunk)
            if reply.upgraded:
                break
        if reply.closed:
            parser.finish()
    finally:
        writer.close()
    return reply


async def run_async(inputs: Iterable[Input], concurrency: int, idle: float) -> Outcome:
    outcome = Outcome()
    it = iter(inputs)

    async def worker() -> None:
        for inp in it:
            judge(inp, await send(inp, idle), outcome)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcome


def run(inputs: Iterable[Input], concurrency: int = 48, idle: float = 0.5) -> Outcome:
    return asyncio.run(run_async(inputs, concurrency, idle))


# -- the corpus and its mutations ---------------------------------------------------------


def addresses(site: Site, rng: random.Random) -> tuple[int, str]:
    """A port and Host to reach a function at: its own port or the main one."""
    return site.address(rng.choice(FUNCTIONS), rng.choice(("port", "host")))


def seeds(site: Site, rng: random.Random) -> Iterator[Input]:
    """Well-formed requests of every kind, and the smuggling corpus, at random addresses."""
    while True:
        port, host = addresses(site, rng)
        # Only requests without credentials name /smuggled: the guarded handlers must never
        # see that path.
        creds, path = (site.creds, "/ok?id=fz") if rng.random() < 0.8 else ({}, "/smuggled")
        kind = rng.randrange(9)
        if kind == 0:
            data = request("GET", path, host, headers=creds)
        elif kind == 1:
            body = b"x" * rng.randrange(1, 300)
            data = request("POST", path, host, headers=creds, body=body)
        elif kind == 2:
            chunks = b"".join(b"%x\r\n%b\r\n" % (n, b"c" * n) for n in (1, 10, 100))
            te = {**creds, "Transfer-Encoding": "chunked"}
            data = request("PUT", path, host, headers=te) + chunks + b"0\r\n\r\n"
        elif kind == 3:
            data = websocket_upgrade("/ws?id=fz", host, creds) + b"\x81\x85abcd" + bytes(5)
        elif kind == 4:
            data = request("HEAD", path, host, headers=creds)
            data += request("OPTIONS", "*", host, headers=creds)
        elif kind == 5:
            data = request("GET", path, host, headers={**creds, "Expect": "100-continue"})
        elif kind == 6:
            keep = {**creds, "Connection": "keep-alive"}
            data = request("GET", path, host, version="1.0", headers=keep)
        else:
            built, _ = rng.choice(list(ATTACKS.values()))(host, site.creds)
            pieces = built if isinstance(built, list) else [built]
            yield Input(port, pieces)
            continue
        yield Input(port, [data])


_TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b"\r\n\r\n",
    b"\x00",
    b" ",
    b"\t",
    b":",
    b",",
    b";",
    b"\x0b",
    b"\x7f",
    b"\xff",
    b"\xe9",
    b"%00",
    b"chunked",
    b"Transfer-Encoding: chunked\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 7\r\n",
    b"Content-Length: -1\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Connection: close\r\n",
    b"Connection: upgrade\r\n",
    b"Upgrade: websocket\r\n",
    b"Host: x\r\n",
    b"Expect: 100-continue\r\n",
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"1;a=b\r\n",
    b"\r\n 1",
    b"Authorization: Bearer wk-\xe9.ws-\xff\r\n",
    b"Ketch-Key: \xff\r\n",
]


def mutate(rng: random.Random, data: bytes, other: bytes) -> bytes:
    """One to four random edits of `data`; `other` is another input, for splicing."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randint(0, len(out))
        op = rng.randrange(8)
        if op == 0 and out:  # flip a byte
            out[min(at, len(out) - 1)] = rng.randrange(256)
        elif op == 1:  # insert a token
            out[at:at] = rng.choice(_TOKENS)
        elif op == 2 and out:  # delete a range
            del out[at : at + rng.randint(1, 16)]
        elif op == 3 and out:  # repeat a range
            end = min(len(out), at + rng.randint(1, 32))
            out[at:at] = out[at:end] * rng.randint(1, 4)
        elif op == 4:  # splice in part of another input
            start = rng.randint(0, len(other))
            # The marker of requests without credentials stays with them.
            piece = other[start : start + rng.randint(1, 64)].replace(b"smuggled", b"spliced")
            out[at:at] = piece
        elif op == 5:  # truncate
            del out[at:]
        elif op == 6 and out:  # change the case of a range
            end = min(len(out), at + rng.randint(1, 16))
            out[at:end] = out[at:end].swapcase()
        else:  # a run of random bytes
            out[at:at] = rng.randbytes(rng.randint(1, 24))
    return bytes(out)


def mutated(site: Site, seed: int, count: int) -> Iterator[Input]:
    """`count` inputs: a quarter kept as they are, the rest mutated; some split in pieces
    at random points, so that the parser sees them cut anywhere."""
    rng = random.Random(seed)
    source = seeds(site, rng)
    recent: list[bytes] = [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"]
    for _ in range(count):
        base = next(source)
        data = base.data
        if rng.random() < 0.75:
            data = mutate(rng, data, rng.choice(recent))
        recent = [*recent[-31:], data]
        pieces = [data]
        if len(data) > 2 and rng.random() < 0.3:
            cut = rng.randrange(1, len(data))
            pieces = [data[:cut], data[cut:]]
        yield Input(base.port, pieces)


# -- Hypothesis strategies ----------------------------------------------------------------

_METHODS = [
    b"GET",
    b"POST",
    b"PUT",
    b"HEAD",
    b"OPTIONS",
    b"DELETE",
    b"PATCH",
    b"TRACE",
    b"CONNECT",
    b"PRI",
    b"SOURCE",
    b"PROPFIND",
    b"get",
    b"G ET",
    b"",
]
_TARGETS = [
    b"/ok",
    b"/smuggled",
    b"*",
    b"/ws",
    b"/nows",
    b"http://a/ok",
    b"https://a:1/x",
    b"//a",
    b"/%00",
    b"/a?b=c#d",
    b"",
    b"/\xff",
    b"/a b",
]
_VERSIONS = [
    b"HTTP/1.1",
    b"HTTP/1.0",
    b"HTTP/2.0",
    b"HTTP/0.9",
    b"http/1.1",
    b"HTTP/1.10",
    b"HTTP/1.1 ",
    b"RTSP/1.0",
    b"",
]
_NAMES = [
    b"Host",
    b"Content-Length",
    b"Transfer-Encoding",
    b"Connection",
    b"Upgrade",
    b"Expect",
    b"Authorization",
    b"Ketch-Key",
    b"Ketch-Secret",
    b"Modal-Key",
    b"X-Forwarded-For",
    b"Sec-WebSocket-Key",
    b"Sec-WebSocket-Version",
    b"Trailer",
    b"TE",
    b"Content-Length ",
    b" Host",
    b"Transfer_Encoding",
    b"X\x00Y",
    b"",
]
_VALUES = [
    b"chunked",
    b"Chunked",
    b" chunked",
    b"chunked, chunked",
    b"gzip, chunked",
    b"identity",
    b"0",
    b"5",
    b"-1",
    b"0x5",
    b"+5",
    b"5, 5",
    b"99999999999999999999",
    b"close",
    b"keep-alive",
    b"upgrade",
    b"Upgrade, HTTP2-Settings",
    b"websocket",
    b"h2c",
    b"100-continue",
    b"13",
    b"dGhlIHNhbXBsZSBub25jZQ==",
    b"a\r\n b",
    b"a\nb",
    b"a\rb",
    b"a\x00b",
    b"\xe9\xff",
    b"Bearer wk-a.ws-b",
    b"",
    b"127.0.0.1",
]
_EOLS = [b"\r\n"] * 8 + [b"\n", b"\r", b"\r\r\n", b"\n\r"]


def _line(parts: tuple[bytes, bytes, bytes, bytes]) -> bytes:
    return b"".join(parts)


_header = st.tuples(
    st.one_of(st.sampled_from(_NAMES), st.binary(min_size=1, max_size=12)),
    st.sampled_from([b": ", b":", b" : ", b":\t", b": \t"]),
    st.one_of(st.sampled_from(_VALUES), st.binary(max_size=24)),
    st.sampled_from(_EOLS),
).map(_line)


@st.composite
def raw_requests(draw: st.DrawFn, site: Site) -> Input:
    """A request built from parts, most of them valid, some not: the request line, headers
    (with or without credentials), a body framed right, wrong or twice, and maybe a second
    request behind it."""
    fn = draw(st.sampled_from(FUNCTIONS))
    port, host = site.address(fn, draw(st.sampled_from(["port", "host"])))
    method = draw(st.one_of(st.sampled_from(_METHODS), st.binary(max_size=8)))
    target = draw(
        st.one_of(st.sampled_from(_TARGETS), st.binary(max_size=16).map(lambda b: b"/" + b))
    )
    version = draw(st.sampled_from(_VERSIONS))
    eol = draw(st.sampled_from(_EOLS))
    lines = [method + b" " + target + (b" " + version if version else b"") + eol]
    if draw(st.booleans()):
        lines.append(b"Host: " + host.encode() + b"\r\n")
    if draw(st.integers(0, 4)):
        lines += [f"{k}: {v}\r\n".encode() for k, v in site.creds.items()]
        if b"smuggled" in target:
            lines[0] = lines[0].replace(b"smuggled", b"ok")
    lines += draw(st.lists(_header, max_size=6))
    body = draw(
        st.sampled_from(
            [
                b"",
                b"hello",
                b"0\r\n\r\n",
                b"5\r\nhello\r\n0\r\n\r\n",
                b"5\r\nhel",
                b"ffffffff\r\nx",
                b"0\r\nX-T: 1\r\n\r\n",
            ]
        )
    )
    framing = draw(st.sampled_from(["none", "cl", "cl-wrong", "chunked", "both"]))
    if framing == "cl":
        lines.append(b"Content-Length: %d\r\n" % len(body))
    elif framing == "cl-wrong":
        lines.append(b"Content-Length: %d\r\n" % draw(st.integers(0, 2 * len(body) + 2)))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: chunked\r\n")
    elif framing == "both":
        lines.append(b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n" % len(body))
    data = b"".join(lines) + draw(st.sampled_from([b"\r\n", b"\n", b""])) + body
    if draw(st.integers(0, 3)) == 0:
        data += request("GET", "/smuggled?id=hyp", host)
    cut = draw(st.integers(0, len(data)))
    pieces = [data[:cut], data[cut:]] if 0 < cut < len(data) else [data]
    return Input(port, pieces)
