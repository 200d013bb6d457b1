#!/usr/bin/env python
"""A long chaos run: spawned calls and `.remote()` calls while the server is killed with
`kill -9`, containers are killed with SIGKILL and the app is redeployed, at random
(seeded) moments. The fast, deterministic variants are tests/integration/test_chaos.py.

    .venv/bin/python bench/chaos.py [--rounds 3] [--calls 2000] [--faults 4] [--seed 1]

Each round spawns --calls calls (64 spawns waiting for the server's answer at a time) of
`supports.chaos_app.work`, which takes --seconds, while a thread makes `.remote()` calls
one after another; meanwhile --faults faults, each one of:

* `server`: kill -9 of the server. The SDK client has work in flight, so it starts a new
  server and sends its unanswered requests again (spawns included).
* `container`: SIGKILL of a container that has run an input of this round.
* `redeploy`: the app is deployed again (a new version; the old containers drain).

Then every call's result is collected and checked:

* every spawn was accepted, every call got its own value back;
* every input finished at least once, and started at most once more per fault of the
  round (a run is repeated only when its server or container died under it);
* the server's log has no traceback; a last plain call succeeds.

Prints a line per round; exits 1 when an invariant breaks. Runs on a fresh KETCH_HOME,
removed at the end (--keep-home keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(ROOT / "tests"))  # supports.chaos_app, the app the kill tests use

from core import _kill_containers, log  # noqa: E402

FAULTS = ("server", "container", "redeploy")


def _journal(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        word, i, pid = line.split()
        out.append((word, int(i), int(pid)))
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def _server_pid(home: Path) -> int | None:
    import json

    try:
        return int(json.loads((home / "server.json").read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None


def _kill_server(home: Path) -> None:
    pid = _server_pid(home)
    if pid is None or not _alive(pid):
        return
    os.kill(pid, signal.SIGKILL)
    while _alive(pid):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # it is our child when this process started it
        time.sleep(0.02)


def _fault(kind: str, home: Path, journal: Path, rng: random.Random) -> str:
    from supports import chaos_app

    if kind == "server":
        _kill_server(home)
        return "server killed"
    if kind == "container":
        pids = sorted({pid for _, _, pid in _journal(journal) if _alive(pid)})
        if not pids:
            return "no container to kill"
        victim = rng.choice(pids)
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        return f"container {victim} killed"
    chaos_app.app.deploy()
    return "redeployed"


def run_round(r: int, args: argparse.Namespace, home: Path, rng: random.Random) -> bool:
    import ketch
    from supports import chaos_app

    work = chaos_app.work
    journal, gate = home / f"journal-{r}", home / "gate"
    gate.touch()  # nothing waits on the gate here; --seconds keeps inputs in flight
    j, g = str(journal), str(gate)
    spawned: list[Any] = []
    remote: dict[int, Any] = {}
    stop = threading.Event()

    def spawner() -> None:
        async def go() -> list[Any]:
            window = asyncio.Semaphore(64)

            async def one(i: int) -> Any:
                async with window:
                    return await work.spawn.aio(j, g, i, 1 << 30, args.seconds)

            return list(
                await asyncio.gather(*(one(i) for i in range(args.calls)), return_exceptions=True)
            )

        spawned.extend(asyncio.run(go()))

    def caller() -> None:
        i = args.calls
        while not stop.is_set():
            try:
                remote[i] = work.remote(j, g, i, 1 << 30, args.seconds)
            except Exception as exc:
                remote[i] = exc
            i += 1

    threads = [threading.Thread(target=spawner), threading.Thread(target=caller)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    done = []
    for _ in range(args.faults):
        time.sleep(rng.uniform(0.2, args.max_gap))
        done.append(_fault(rng.choice(FAULTS), home, journal, rng))
    threads[0].join()
    stop.set()
    threads[1].join()

    problems = [f"spawn failed: {s!r}" for s in spawned if not isinstance(s, ketch.FunctionCall)]
    calls = [s for s in spawned if isinstance(s, ketch.FunctionCall)]
    results = ketch.FunctionCall.gather(*calls) if not problems else []
    expected = {i: 3 * i for i in range(args.calls)}
    problems += [
        f"spawned call {i}: got {v!r}" for i, (v, _) in enumerate(results) if v != expected[i]
    ]
    for i, v in remote.items():
        if isinstance(v, BaseException) or v[0] != 3 * i:
            problems.append(f".remote() {i}: got {v!r}")
    entries = _journal(journal)
    starts = collections.Counter(i for w, i, _ in entries if w == "start")
    ends = collections.Counter(i for w, i, _ in entries if w == "end")
    inputs = set(expected) | set(remote)
    problems += [f"input {i} never finished" for i in sorted(inputs - set(ends))]
    problems += [
        f"input {i} started {n} times with {len(done)} faults"
        for i, n in starts.items()
        if n > 1 + len(done)
    ]
    server_log = (home / "server.log").read_text(errors="replace")
    if "Traceback" in server_log:
        at = server_log.index("Traceback")
        problems.append("traceback in server.log:\n" + server_log[at : at + 2000])
    reruns = sum(n - 1 for n in starts.values())
    log(
        f"round {r}: {len(calls)} spawned, {len(remote)} .remote(), {reruns} re-runs, "
        f"{time.monotonic() - t0:.1f}s; faults: {', '.join(done)}"
    )
    for p in problems[:20]:
        log(f"  FAIL {p}")
    return not problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--faults", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=0.2, help="each input's run time")
    parser.add_argument("--max-gap", type=float, default=2.0, help="most seconds between faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-home", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="ketch-chaos-"))
    os.environ["KETCH_HOME"] = str(home)
    os.environ.setdefault("KETCH_GATEWAY_PORT", "0")
    from ketch._client.client import Client
    from ketch._client.discovery import ensure_server
    from ketch._utils.aio import run_sync
    from ketch.config import Config
    from supports import chaos_app

    rng = random.Random(args.seed)
    ok = True
    try:
        ensure_server(Config.load())
        chaos_app.app.deploy()
        for r in range(args.rounds):
            ok = run_round(r, args, home, rng) and ok
        value, _ = chaos_app.work.remote(str(home / "last"), str(home / "gate"), 7, 1 << 30)
        ok = ok and value == 21
    finally:
        current = Client._current
        if current is not None:
            with contextlib.suppress(Exception):
                run_sync(current.close())
        Client.reset()
        pid = _server_pid(home)
        if pid is not None and _alive(pid):
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 15
            while _alive(pid) and time.monotonic() < deadline:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(pid, os.WNOHANG)
                time.sleep(0.05)
        _kill_containers(home)
        if args.keep_home:
            log(f"state kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
    log("chaos: all invariants held" if ok else "chaos: INVARIANTS BROKEN")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
