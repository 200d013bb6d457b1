"""Each container the scheduler starts gets a credential of its own in KETCH_TOKEN, never
the server token, and loses it when it is gone (SPEC I4)."""

from __future__ import annotations

import pytest

from ketch._server.credentials import Scope

from .fakes import Sim, run

pytestmark = [pytest.mark.spec("I4")]


def test_each_container_gets_its_own_credential_in_place_of_the_token() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy(min_containers=2)
        await sim.settle()
        c1, c2 = sim.backend.live()
        creds = [c.spec.env["KETCH_TOKEN"] for c in (c1, c2)]
        assert "tok" not in creds and creds[0] != creds[1]
        for c, cred in zip((c1, c2), creds, strict=True):
            assert sim.sched.credentials.lookup(cred) == Scope(c.cid, f.app_id, f.environment)

    run(body())


def test_a_credential_is_revoked_when_its_container_exits() -> None:
    async def body() -> None:
        sim = Sim()
        f = sim.deploy()
        sim.submit(f, "in-1")
        (c1,) = await sim.start_ready()
        cred = c1.spec.env["KETCH_TOKEN"]
        c1.crash()
        await sim.settle()
        assert sim.sched.credentials.lookup(cred) is None
        (c2,) = await sim.start_ready()  # the input runs again in a new container
        assert sim.sched.credentials.lookup(c2.spec.env["KETCH_TOKEN"]) is not None
        c2.out("in-1")
        sim.sched.lifecycle.stop(sim.sched.containers[c2.cid], "scaledown")
        c2.exit()
        await sim.settle()
        assert len(sim.sched.credentials) == 0

    run(body())
