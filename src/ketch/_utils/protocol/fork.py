"""The fork-server's own protocol: the local backend and a template process it started.

Separate from the call protocol (`messages`): these frames travel on a socketpair as JSON
(a fork request carries the child's output pipes as file descriptors beside it), never
through the server's call port, and both ends are ketch code of one version. Standard
library only: the template imports it before the user's code.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

# backend -> template
LOAD: Literal["load"] = "load"  # the first frame: what to import before forking
FORK: Literal["fork"] = "fork"  # start one container (its stdout/stderr pipes beside it)
RETIRE: Literal["retire"] = "retire"  # fork no more; leave once the children have

# template -> backend
READY: Literal["ready"] = "ready"  # loaded: forks may be asked for
FAILED: Literal["failed"] = "failed"  # loading the function raised
UNSAFE: Literal["unsafe"] = "unsafe"  # loaded, but forking now would be unsafe (threads)
FORKED: Literal["forked"] = "forked"  # a child started
REFUSED: Literal["refused"] = "refused"  # a fork was refused (and none will follow)
EXIT: Literal["exit"] = "exit"  # a child ended


class Load(TypedDict):
    t: Literal["load"]
    function: dict[str, Any]  # container.ContainerFunction.to_wire()
    sys_path: list[str]
    web_runtime: str
    params: str | None  # base64: a memory snapshot's instance parameters
    snapshot: bool


class Fork(TypedDict):
    t: Literal["fork"]
    cid: str
    env: dict[str, str]
    cwd: str


class Ready(TypedDict):
    t: Literal["ready"]
    pid: int


class Failed(TypedDict):
    t: Literal["failed"]
    error: str


class Unsafe(TypedDict):
    t: Literal["unsafe"]
    why: str


class Forked(TypedDict):
    t: Literal["forked"]
    cid: str
    pid: int


class Refused(TypedDict):
    t: Literal["refused"]
    cid: str
    why: str


class Exit(TypedDict):
    t: Literal["exit"]
    pid: int
    code: int | None  # None: reaped elsewhere, its code unknown


RETIRE_FRAME = b'{"t": "retire"}'
