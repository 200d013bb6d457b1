"""Container and platform log lines: kept per app (bounded), written to disk, fanned out live."""

from __future__ import annotations

import collections
import time
from pathlib import Path
from typing import Any

from ketch._utils.wire import Channel

_KEEP_IN_MEMORY = 5000
_MAX_FILE_BYTES = 16 * 1024 * 1024


class LogHub:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._recent: dict[str, collections.deque[dict[str, Any]]] = {}
        self._subscribers: dict[str, set[Channel]] = collections.defaultdict(set)

    def emit(self, app_id: str, function: str, container: str, stream: str, line: str) -> None:
        entry = {
            "t": "log", "app_id": app_id, "function": function, "container": container,
            "stream": stream, "line": line, "ts": time.time(),
        }
        self._recent.setdefault(app_id, collections.deque(maxlen=_KEEP_IN_MEMORY)).append(entry)
        path = self.directory / f"{app_id}.log"
        try:
            if path.exists() and path.stat().st_size > _MAX_FILE_BYTES:
                path.replace(path.with_suffix(".log.1"))
            with path.open("a") as fh:
                fh.write(f"{entry['ts']:.3f}\t{function}\t{container}\t{stream}\t{line}\n")
        except OSError:
            pass  # logs are best effort; a full disk must not take calls down
        dead = []
        for ch in self._subscribers.get(app_id, ()):
            if ch.closed:
                dead.append(ch)
            else:
                ch.send(entry)
        for ch in dead:
            self._subscribers[app_id].discard(ch)

    def subscribe(self, app_id: str, channel: Channel) -> None:
        self._subscribers[app_id].add(channel)

    def unsubscribe_all(self, channel: Channel) -> None:
        for subs in self._subscribers.values():
            subs.discard(channel)

    def read(self, app_id: str, tail: int | None = None, since: float | None = None) -> list[str]:
        """Stored lines for an app, oldest first, as 'ts function container stream line'."""
        lines: list[str] = []
        for name in (f"{app_id}.log.1", f"{app_id}.log"):
            path = self.directory / name
            if path.exists():
                lines.extend(path.read_text(errors="replace").splitlines())
        if since is not None:
            lines = [ln for ln in lines if float(ln.split("\t", 1)[0]) >= since]
        if tail is not None:
            lines = lines[-tail:] if tail > 0 else []
        return lines
