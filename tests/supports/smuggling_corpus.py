"""A request-smuggling corpus of the project's own (this is not an app): raw requests for a
guarded endpoint, each built for a Host and a set of valid credentials.

An attack is a function (host, credentials) -> (bytes, or pieces to send apart; the ids of
the requests in it that carry credentials). Requests without credentials always target
`/smuggled?...`, so a handler's record shows at once whether one got through; requests with
credentials name themselves in `id=`, as do the test apps' responses.

CL.TE, TE.CL and TE.TE framing conflicts, obfuscated and HTTP/1.0 Transfer-Encoding,
requests inside bodies, pipelining after an upgrade head, handshakes the container refuses
or does not understand, header injection, odd versions.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from supports.raw_http import request, websocket_upgrade

_ids = itertools.count()


def next_id() -> int:
    return next(_ids)


def ok_request(host: str, creds: dict[str, str], tag: str, **extra: str) -> tuple[bytes, str]:
    """An authenticated request the gateway may forward; returns it and its name."""
    rid = f"{tag}-{next(_ids)}"
    return request("GET", f"/ok?id={rid}", host, headers={**creds, **extra}), rid


def smuggled(host: str, tag: str = "s") -> bytes:
    """A request without credentials: it must never reach the guarded handler."""
    return request("GET", f"/smuggled?id={tag}-{next(_ids)}", host)


# -- the corpus ---------------------------------------------------------------------------
# Each builds (bytes or pieces sent apart, ids of requests the gateway may answer with a
# handler's response) for Host `h` and credentials `c`.

Built = tuple[bytes | list[bytes], set[str]]


def _upgrade(h: str, c: dict[str, str], path: str, **extra: str) -> tuple[bytes, str]:
    rid = f"u-{next(_ids)}"
    return websocket_upgrade(f"{path}?id={rid}", h, {**c, **extra}), rid


def upgrade_refused_then_request(h: str, c: dict[str, str]) -> Built:
    head, rid = _upgrade(h, c, "/nows")  # the app refuses this handshake: 403, not 101
    return head + smuggled(h), {rid}


def upgrade_accepted_then_request(h: str, c: dict[str, str]) -> Built:
    head, rid = _upgrade(h, c, "/ws")
    return head + smuggled(h), {rid}


def upgrade_odd_token_then_request(h: str, c: dict[str, str]) -> Built:
    # "websocket" among other tokens: the container's server does not switch for this.
    head, rid = _upgrade(h, c, "/ws", Upgrade="websocket, h2c")
    return head.replace(b"Upgrade: websocket\r\n", b"", 1) + smuggled(h), {rid}


def upgrade_refused_then_slow_request(h: str, c: dict[str, str]) -> Built:
    # Were it forwarded, its answer would come late, to whoever reused the connection.
    head, rid = _upgrade(h, c, "/nows")
    slow = request("GET", f"/smuggled-slow?id=s-{next(_ids)}", h)
    return head + slow, {rid}


def upgrade_then_request_sent_apart(h: str, c: dict[str, str]) -> Built:
    head, rid = _upgrade(h, c, "/nows")
    return [head, smuggled(h)], {rid}


def upgrade_then_two_requests(h: str, c: dict[str, str]) -> Built:
    head, rid = _upgrade(h, c, "/nows")
    ok, rid2 = ok_request(h, c, "after-upgrade")
    return head + smuggled(h) + ok, {rid, rid2}


def upgrade_with_body_hiding_request(h: str, c: dict[str, str]) -> Built:
    hidden = smuggled(h)
    head, rid = _upgrade(h, c, "/nows", **{"Content-Length": str(len(hidden))})
    return head + hidden, {rid}


def post_upgrade_with_body_then_request(h: str, c: dict[str, str]) -> Built:
    rid = f"pu-{next(_ids)}"
    head = request(
        "POST",
        f"/ok?id={rid}",
        h,
        body=b"abc",
        headers={**c, "Upgrade": "websocket", "Connection": "Upgrade"},
    )
    return head + smuggled(h), {rid}


def h2c_upgrade_then_request(h: str, c: dict[str, str]) -> Built:
    rid = f"h2c-{next(_ids)}"
    head = request(
        "GET",
        f"/ok?id={rid}",
        h,
        headers={
            **c,
            "Upgrade": "h2c",
            "Connection": "Upgrade, HTTP2-Settings",
            "HTTP2-Settings": "AAMAAABkAARAAAAAAAIAAAAA",
        },
    )
    return head + smuggled(h), {rid}


def websocket_upgrade_http10(h: str, c: dict[str, str]) -> Built:
    head, rid = _upgrade(h, c, "/ws")
    return head.replace(b"HTTP/1.1", b"HTTP/1.0", 1) + smuggled(h), {rid}


def _framed(
    h: str, c: dict[str, str], framing: str, body: bytes, version: str = "1.1"
) -> tuple[bytes, str]:
    rid = f"f-{next(_ids)}"
    head = f"POST /ok?id={rid} HTTP/{version}\r\nHost: {h}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in c.items())
    return (head + framing + "\r\n").encode("latin-1") + body, rid


def _cl(n: int) -> str:
    return f"Content-Length: {n}\r\n"


CHUNKED = "Transfer-Encoding: chunked\r\n"
ZERO = b"0\r\n\r\n"

FRAMING_ATTACKS = {
    # CL.TE and TE.CL: one side counts the length, the other the chunks.
    "cl_te": (_cl(5) + CHUNKED, lambda s: ZERO + s),
    "te_cl": (CHUNKED + _cl(5), lambda s: ZERO + s),
    "te_cl_long": (CHUNKED + _cl(100), lambda s: ZERO + s),
    # TE.TE: a Transfer-Encoding one side reads and the other ignores.
    "te_twice": (CHUNKED + "Transfer-Encoding: identity\r\n", lambda s: ZERO + s),
    "te_chunked_chunked": ("Transfer-Encoding: chunked, chunked\r\n", lambda s: ZERO + s),
    "te_two_chunked_fields": (CHUNKED + CHUNKED, lambda s: ZERO + s),
    "te_space_before_colon": ("Transfer-Encoding : chunked\r\n" + _cl(5), lambda s: ZERO + s),
    "te_xchunked": ("Transfer-Encoding: xchunked\r\n" + _cl(5), lambda s: ZERO + s),
    "te_chunked_not_last": ("Transfer-Encoding: chunked, gzip\r\n", lambda s: ZERO + s),
    "te_vertical_tab": ("Transfer-Encoding:\x0bchunked\r\n", lambda s: ZERO + s),
    "te_obs_fold": ("Transfer-Encoding:\r\n chunked\r\n", lambda s: ZERO + s),
    "te_name_obs_fold": ("X-Pad: x\r\n Transfer-Encoding: chunked\r\n", lambda s: ZERO + s),
    "te_quoted": ('Transfer-Encoding: "chunked"\r\n', lambda s: ZERO + s),
    "te_nul": ("Transfer-Encoding: chunked\x00\r\n", lambda s: ZERO + s),
    "cl_twice_differing": (_cl(5) + _cl(6), lambda s: b"01234" + s),
    "cl_twice_same": (_cl(5) + _cl(5), lambda s: b"01234" + s),
    "cl_list": ("Content-Length: 5, 5\r\n", lambda s: b"01234" + s),
    "cl_plus": ("Content-Length: +5\r\n", lambda s: b"01234" + s),
    "cl_hex": ("Content-Length: 0x5\r\n", lambda s: b"01234" + s),
    "cl_space_before_colon": ("Content-Length : 5\r\n", lambda s: b"01234" + s),
    "cl_overflow": ("Content-Length: 99999999999999999999999\r\n", lambda s: s),
    # Requests inside bodies the gateway frames exactly: they stay bodies.
    "cl_hides_request": ("Content-Length: {n}\r\n", lambda s: s),
    "cl_trailing_space_hides_request": ("Content-Length: {n} \r\n", lambda s: s),
    "cl_leading_zeros_hides_request": ("Content-Length: 000{n}\r\n", lambda s: s),
    "chunk_hides_request": (CHUNKED, lambda s: b"%x\r\n%b\r\n0\r\n\r\n" % (len(s), s)),
    "chunk_extension_hides_request": (
        CHUNKED,
        lambda s: b'%x;ext="a\\"b"\r\n%b\r\n0\r\n\r\n' % (len(s), s),
    ),
    "chunk_size_overflow": (CHUNKED, lambda s: b"fffffffffffffffffff\r\n" + s),
    "chunk_size_negative": (CHUNKED, lambda s: b"-1\r\n" + s),
    "chunk_size_hex_prefix": (CHUNKED, lambda s: b"0x5\r\n" + s),
    "chunk_size_space": (CHUNKED, lambda s: b"5 \r\n01234\r\n0\r\n\r\n" + s),
    "chunk_bare_lf": (CHUNKED, lambda s: b"5\n01234\r\n0\r\n\r\n" + s),
    "chunk_data_too_long": (CHUNKED, lambda s: b"1\r\n01234\r\n0\r\n\r\n" + s),
    "chunk_extension_lf": (CHUNKED, lambda s: b"5;a\nb\r\n01234\r\n0\r\n\r\n" + s),
    "trailer_content_length": (CHUNKED, lambda s: b"0\r\nContent-Length: 5\r\n\r\n" + s),
    "trailer_transfer_encoding": (CHUNKED, lambda s: b"0\r\nTransfer-Encoding: x\r\n\r\n" + s),
    # A chunked body from an HTTP/1.0 client: its framing is not to be trusted (RFC 9112 6.1).
    "te_http10": ("Connection: keep-alive\r\n" + CHUNKED, lambda s: ZERO + s),
}


def _framing(name: str) -> Callable[[str, dict[str, str]], Built]:
    framing, body = FRAMING_ATTACKS[name]
    version = "1.0" if name.endswith("http10") else "1.1"

    def build(h: str, c: dict[str, str]) -> Built:
        hidden = body(smuggled(h))
        data, rid = _framed(h, c, framing.format(n=len(hidden)), hidden, version)
        return data, {rid}

    return build


def pipelined_auth_then_unauth(h: str, c: dict[str, str]) -> Built:
    ok, rid = ok_request(h, c, "p")
    return ok + smuggled(h), {rid}


def pipelined_unauth_then_auth(h: str, c: dict[str, str]) -> Built:
    ok, rid = ok_request(h, c, "p", Connection="close")
    return smuggled(h) + ok, {rid}


def pipelined_many(h: str, c: dict[str, str]) -> Built:
    data, ids = b"", set()
    for _ in range(5):
        ok, rid = ok_request(h, c, "m")
        data += ok + smuggled(h)
        ids.add(rid)
    return data, ids


def _header_attack(line: bytes) -> Callable[[str, dict[str, str]], Built]:
    def build(h: str, c: dict[str, str]) -> Built:
        ok, rid = ok_request(h, c, "hdr")
        head, _, rest = ok.partition(b"\r\n")
        return head + b"\r\n" + line.replace(b"SMUGGLED", smuggled(h)) + rest, {rid}

    return build


HEADER_ATTACKS = {
    "bare_lf_in_header": b"X-A: a\nSMUGGLED",
    "bare_cr_in_header": b"X-A: a\rSMUGGLED\r\n",
    "bare_lf_line_end": b"X-A: a\n",
    "nul_in_value": b"X-A: a\x00b\r\n",
    "ctl_in_value": b"X-A: a\x01b\r\n",
    "del_in_value": b"X-A: a\x7fb\r\n",
    "obs_fold": b"X-A: a\r\n folded\r\n",
    "space_in_name": b"X A: b\r\n",
    "empty_name": b": b\r\n",
    "space_before_colon": b"X-A : b\r\n",
    "second_host": b"Host: other.example\r\n",
}


def http09(h: str, c: dict[str, str]) -> Built:
    return b"GET /smuggled?id=09\r\n\r\n", set()


def http2_version(h: str, c: dict[str, str]) -> Built:
    ok, _ = ok_request(h, c, "v2")
    return ok.replace(b"HTTP/1.1", b"HTTP/2.0", 1) + smuggled(h), set()


def http2_preface(h: str, c: dict[str, str]) -> Built:
    return b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + smuggled(h), set()


def absolute_form_names_another_host(h: str, c: dict[str, str]) -> Built:
    # The request line's authority wins over Host: it must be checked as that endpoint's.
    return request("GET", f"http://{h}/smuggled?id=abs-{next(_ids)}", "public.example"), set()


def expect_continue_then_request(h: str, c: dict[str, str]) -> Built:
    rid = f"e-{next(_ids)}"
    hidden = smuggled(h)
    data = request("POST", f"/ok?id={rid}", h, body=hidden, headers={**c, "Expect": "100-continue"})
    return data, {rid}


# Attacks that mix requests on one connection: worth trying where Host picks the endpoint.
MIXING = [
    upgrade_refused_then_request,
    upgrade_refused_then_slow_request,
    upgrade_accepted_then_request,
    upgrade_odd_token_then_request,
    upgrade_then_request_sent_apart,
    upgrade_then_two_requests,
    upgrade_with_body_hiding_request,
    post_upgrade_with_body_then_request,
    h2c_upgrade_then_request,
    websocket_upgrade_http10,
    pipelined_auth_then_unauth,
    pipelined_unauth_then_auth,
    pipelined_many,
    http09,
    http2_version,
    http2_preface,
    absolute_form_names_another_host,
    expect_continue_then_request,
]
ATTACKS: dict[str, Callable[[str, dict[str, str]], Built]] = {
    **{a.__name__: a for a in MIXING},
    **{name: _framing(name) for name in FRAMING_ATTACKS},
    **{name: _header_attack(line) for name, line in HEADER_ATTACKS.items()},
}
