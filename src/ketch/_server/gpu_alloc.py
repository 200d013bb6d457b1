"""Which container holds which of the host's GPUs (S7): taking, releasing, and what a
container is told about the GPUs it got."""

from __future__ import annotations

from ketch._backends import gpu as gpus


class GpuAllocator:
    """The host's GPUs and their holders. The inventory is discovered on first need, so a
    server whose functions ask for no GPU never probes for one."""

    def __init__(self, inventory: gpus.Inventory | None = None) -> None:
        # Given: a unit test's fake host; None: discovered on first need.
        self._inventory = inventory
        self.owner: dict[int, str] = {}  # GPU index -> id of the container holding it

    def inventory(self) -> gpus.Inventory:
        if self._inventory is None:
            self._inventory = gpus.discover()
        return self._inventory

    def take(self, request: str | list[str], cid: str) -> tuple[int, ...] | None:
        """Free GPUs meeting the request, now held by container `cid`; None if there are
        not enough (see `why_waiting`)."""
        got = gpus.assign(request, self.inventory().devices, frozenset(self.owner))
        if got is not None:
            for index in got:
                self.owner[index] = cid
        return got

    def why_waiting(self, request: str | list[str]) -> str:
        """Why `take` found nothing, in words for `app status`."""
        inv = self.inventory()
        what = gpus.request_text(request)
        if gpus.could_ever_fit(request, inv.devices):
            return (
                f"waiting: no GPU of type {what} free (all matching GPUs are held by other "
                "containers)"
            )
        return f"waiting: no GPU of type {what} on this host (GPUs here: {inv.describe()})"

    def release(self, cid: str, held: tuple[int, ...]) -> None:
        for index in held:
            if self.owner.get(index) == cid:
                del self.owner[index]

    def env(self, held: tuple[int, ...]) -> tuple[dict[str, str], str | None]:
        """The environment that makes a container see exactly the GPUs it holds (none: no
        GPU at all), and the platform event that says which they are."""
        inv = self.inventory()
        if not held and not inv.devices:
            return {}, None
        visible = ",".join(str(i) for i in held)
        env = {"CUDA_VISIBLE_DEVICES": visible, "NVIDIA_VISIBLE_DEVICES": visible or "void"}
        if not held:
            return env, None
        names = ", ".join(d.name for d in inv.devices if d.index in held)
        note = " (a fake inventory from KETCH_FAKE_GPUS: no real GPU)" if inv.fake else ""
        if inv.fake:
            env["KETCH_FAKE_GPUS"] = "1"
        return env, f"GPUs {visible} assigned: {names}{note}"
