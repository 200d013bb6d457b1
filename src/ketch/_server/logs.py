"""Container output and platform events: stored per app (bounded), queried, fanned out live."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from ketch._utils.protocol import messages as m

# How many container ids are remembered (for `ketch container logs` of a container gone).
_KNOWN_CONTAINERS = 10_000
# A follower (`ketch app logs -f`) that falls this far behind is cut off, not buffered on.
_FOLLOW_BACKLOG = 10_000
SOURCES = ("stdout", "stderr", "system")


class Subscriber(Protocol):
    closed: bool

    def send(self, message: dict[str, Any]) -> None: ...


class Follower:
    """A live reader of log entries on the server's loop (the HTTP `follow` stream)."""

    def __init__(self, match: LogFilter) -> None:
        self.match = match
        self.closed = False
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def send(self, message: dict[str, Any]) -> None:
        if self.closed or not self.match(message):
            return
        if self.queue.qsize() >= _FOLLOW_BACKLOG:
            self.closed = True
            self.queue.put_nowait(None)
            return
        self.queue.put_nowait(message)


class LogFilter:
    """Which entries a reader wants: by function, source (stream), container and age."""

    def __init__(
        self,
        *,
        function: str | None = None,
        sources: Iterable[str] | None = None,
        container: str | None = None,
        since: float | None = None,
    ) -> None:
        self.function = function
        self.sources = frozenset(sources) if sources else None
        self.container = container
        self.since = since

    def __call__(self, entry: dict[str, Any]) -> bool:
        return (
            (self.function is None or entry["function"] == self.function)
            and (self.sources is None or entry["stream"] in self.sources)
            and (self.container is None or entry["container"] == self.container)
            and (self.since is None or entry["ts"] >= self.since)
        )


class LogHub:
    """One file pair per app (`<app>.log`, rotated to `<app>.log.1`): together at most
    `retention_bytes`, so the oldest half goes first once an app's logs outgrow it."""

    def __init__(self, directory: Path, retention_bytes: int = 16 * 1024 * 1024) -> None:
        self.directory = directory
        self.retention_bytes = retention_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._sizes: dict[str, int] = {}
        self._subscribers: dict[str, set[Subscriber]] = collections.defaultdict(set)
        self._containers: dict[str, str] = {}  # container id -> app id, newest last
        # Told of every line and event (OTLP log export, O5); None when nothing listens.
        self.on_entry: Callable[[dict[str, Any]], None] | None = None

    def emit(
        self,
        app_id: str,
        function: str,
        container: str,
        stream: str,
        line: str,
        *,
        event: bool = False,
    ) -> None:
        """Store one line and pass it to live readers. `event` marks a platform event
        (container started, stopped, crashed...): stored and followed, but not shown in
        the output of `ketch run`/`serve`, which subscribe over the call connection."""
        entry = {
            "t": m.LOG,
            "app_id": app_id,
            "function": function,
            "container": container,
            "stream": stream,
            "line": line,
            "ts": time.time(),
        }
        if container not in self._containers and container.startswith("ta-"):
            self._containers[container] = app_id
            if len(self._containers) > _KNOWN_CONTAINERS:
                del self._containers[next(iter(self._containers))]
        self._write(app_id, f"{entry['ts']:.3f}\t{function}\t{container}\t{stream}\t{line}\n")
        if self.on_entry is not None:
            self.on_entry(entry)
        subs = self._subscribers.get(app_id)
        if not subs:
            return
        dead = []
        for sub in subs:
            if sub.closed:
                dead.append(sub)
            elif not event or isinstance(sub, Follower):
                sub.send(entry)
        for sub in dead:
            subs.discard(sub)

    def event(self, app_id: str, function: str, container: str, text: str) -> None:
        """A structured platform event, stored as a `system` record."""
        self.emit(app_id, function, container, "system", text, event=True)

    def _write(self, app_id: str, text: str) -> None:
        path = self.directory / f"{app_id}.log"
        data = text.encode(errors="replace")
        try:
            size = self._sizes.get(app_id)
            if size is None:
                size = path.stat().st_size if path.exists() else 0
            if size + len(data) > self.retention_bytes // 2 and size > 0:
                path.replace(path.with_suffix(".log.1"))
                size = 0
            with path.open("ab") as fh:
                fh.write(data)
            self._sizes[app_id] = size + len(data)
        except OSError:
            self._sizes.pop(app_id, None)  # logs are best effort; a full disk must not stop calls

    def subscribe(self, app_id: str, subscriber: Subscriber) -> None:
        self._subscribers[app_id].add(subscriber)

    def unsubscribe(self, app_id: str, subscriber: Subscriber) -> None:
        with contextlib.suppress(KeyError):
            self._subscribers[app_id].discard(subscriber)

    def unsubscribe_all(self, subscriber: Subscriber) -> None:
        for subs in self._subscribers.values():
            subs.discard(subscriber)

    def app_of_container(self, container: str) -> str | None:
        return self._containers.get(container)

    def has_logs(self, app_id: str) -> bool:
        return any((self.directory / n).exists() for n in (f"{app_id}.log", f"{app_id}.log.1"))

    def entries(
        self, app_id: str, match: LogFilter | None = None, tail: int | None = None
    ) -> list[dict[str, Any]]:
        """Stored entries of an app, oldest first."""
        out: list[dict[str, Any]] = []
        for name in (f"{app_id}.log.1", f"{app_id}.log"):
            path = self.directory / name
            if not path.exists():
                continue
            for raw in path.read_text(errors="replace").splitlines():
                parts = raw.split("\t", 4)
                if len(parts) != 5:
                    continue
                try:
                    ts = float(parts[0])
                except ValueError:
                    continue
                entry = {
                    "t": m.LOG,
                    "app_id": app_id,
                    "ts": ts,
                    "function": parts[1],
                    "container": parts[2],
                    "stream": parts[3],
                    "line": parts[4],
                }
                if match is None or match(entry):
                    out.append(entry)
        if tail is not None:
            out = out[-tail:] if tail > 0 else []
        return out

    def read(self, app_id: str, tail: int | None = None, since: float | None = None) -> list[str]:
        """Stored lines for an app, oldest first, as 'ts function container stream line'."""
        return [
            f"{e['ts']:.3f}\t{e['function']}\t{e['container']}\t{e['stream']}\t{e['line']}"
            for e in self.entries(app_id, LogFilter(since=since), tail)
        ]
