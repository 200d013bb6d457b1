"""Results on their way to the clients that wait for them, kept for a client that is
reconnecting (a `.remote()` across a reconnect runs once)."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ketch._server.clock import Clock
    from ketch._utils.wire import Channel

# Undelivered results for a disconnected client are kept this long for its return.
UNDELIVERED_TTL = 600.0


class Delivery:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.clients: dict[str, Channel] = {}
        # client id -> input id -> (expiry, the messages it missed)
        self.undelivered: dict[str, dict[str, tuple[float, list[dict[str, Any]]]]] = (
            collections.defaultdict(dict)
        )

    # -- clients ------------------------------------------------------------------------
    def send(self, client_id: str, iid: str, msg: dict[str, Any]) -> None:
        ch = self.clients.get(client_id)
        if ch is not None and not ch.closed:
            ch.send(msg)
            return
        # Kept for the client's return (a .remote() across a reconnect runs once).
        entry = self.undelivered[client_id].setdefault(
            iid, (self.clock.monotonic() + UNDELIVERED_TTL, [])
        )
        entry[1].append(msg)

    def holds(self, client_id: str, iid: str) -> bool:
        """Whether results of `iid` wait for `client_id` to come back for them."""
        return iid in self.undelivered.get(client_id, {})

    def connected(self, client_id: str, channel: Channel) -> None:
        self.clients[client_id] = channel

    def disconnected(self, client_id: str, channel: Channel) -> None:
        if self.clients.get(client_id) is channel:
            del self.clients[client_id]

    def flush(self, client_id: str, only: str | None = None) -> None:
        """Send a client that is back what it missed (of input `only`, or of all)."""
        ch = self.clients.get(client_id)
        pending = self.undelivered.get(client_id)
        if ch is None or not pending:
            return
        for iid in [only] if only else list(pending):
            entry = pending.pop(iid, None)
            if entry:
                for msg in entry[1]:
                    ch.send(msg)

    def expire(self, now: float) -> None:
        for client_id, pending in list(self.undelivered.items()):
            for iid, (expiry, _) in list(pending.items()):
                if expiry < now:
                    del pending[iid]
            if not pending:
                del self.undelivered[client_id]
