"""A script written for Modal runs unchanged under `ketch run` and `ketch deploy` (C7),
including inside the containers, which import the module and with it `modal`."""

from __future__ import annotations

import uuid

import pytest
from cli_support import ketch, ok, python, write

pytestmark = pytest.mark.spec("C7")

MODAL_SCRIPT = """
    import modal
    import modal.exception
    from modal import App, Secret
    from modal.exception import NotFoundError
    from modal.functions import FunctionCall

    app = modal.App("{name}")


    @app.function(secrets=[Secret.from_dict({{"GREETING": "ahoy"}})], timeout=60)
    def double(x: int) -> int:
        import os
        import sys

        import modal as again  # the container resolves `modal` too
        print("container modal:", again.App is App, sys.modules["modal"] is again,
              os.environ["GREETING"])
        return 2 * x


    @app.function()
    def missing_lookup() -> str:
        try:
            modal.Function.from_name("no-such-app-{name}", "nothing").remote()
        except modal.exception.NotFoundError as exc:
            return "caught " + type(exc).__name__
        return "not raised"


    @app.cls()
    class Counter:
        start: int = modal.parameter(default=0)

        @modal.enter()
        def setup(self):
            self.base = 100

        @modal.method()
        def bump(self, by: int) -> int:
            return self.base + by


    @app.local_entrypoint()
    def main(x: int = 3):
        print("RESULT", double.remote(x))
        call = double.spawn(x + 1)
        print("SPAWNED", FunctionCall.from_id(call.object_id).get(timeout=60))
        print("LOOKUP", missing_lookup.remote())
        print("CLS", Counter().bump.remote(5))
        try:
            modal.Function.from_name("no-such-app-{name}", "f").remote()
        except NotFoundError:
            print("LOCAL NotFoundError")
"""


@pytest.fixture
def modal_script(tmp_path):
    name = f"modal-{uuid.uuid4().hex[:8]}"
    return name, write(tmp_path / "modal_app.py", MODAL_SCRIPT.format(name=name))


def test_modal_script_runs_unchanged(server, modal_script) -> None:
    _, path = modal_script
    out = ok(ketch(server.home, "run", str(path), "--x", "5"))
    for line in ("RESULT 10", "SPAWNED 12", "LOOKUP caught NotFoundError", "CLS 105",
                 "LOCAL NotFoundError"):
        assert line in out, out
    assert "container modal: True True ahoy" in out


def test_modal_script_deploys_unchanged(server, modal_script) -> None:
    name, path = modal_script
    ok(ketch(server.home, "deploy", str(path)))
    # Called from a plain Python process that never imports modal.
    out = ok(python(server.home, f"""
        import ketch
        print(ketch.Function.from_name({name!r}, "double").remote(21))
        print(ketch.Function.from_name({name!r}, "missing_lookup").remote())
    """))
    assert out.split() == ["42", "caught", "NotFoundError"]
