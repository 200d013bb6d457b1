"""scripts/modal_example_names.py: which Modal names an example uses, read with `ast`."""

from __future__ import annotations

import ast
import importlib.util
import sys
import textwrap
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load_script() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "modal_example_names", ROOT / "scripts" / "modal_example_names.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


men = _load_script()


def names(source: str) -> set[str]:
    return set(men.Example(ast.parse(textwrap.dedent(source))).names)


@pytest.mark.spec("P1")
def test_types_follow_assignments_decorators_and_chains() -> None:
    got = names(
        """
        import modal
        from modal import Volume

        app = modal.App("x", image=modal.Image.debian_slim().pip_install("a"))
        vol = Volume.from_name("v", create_if_missing=True)

        @app.function(gpu="T4")
        def f(x): ...

        @app.cls()
        class Model:
            @modal.method()
            def run(self): ...

        @app.local_entrypoint()
        def main():
            call = f.spawn(1)
            call.get()
            Model().run.remote(prompt="hi")
            vol.commit()
        """
    )
    assert {
        "App",
        "App(image=)",
        "Image.debian_slim",
        "Image.pip_install",
        "Volume",
        "Volume.from_name(create_if_missing=)",
        "App.function(gpu=)",
        "App.cls",
        "method",
        "Function.spawn",
        "FunctionCall.get",
        "Function.remote",
        "Volume.commit",
    } <= got
    # `.remote(prompt=)` passes the user's own parameter, not a Modal keyword.
    assert "Function.remote(prompt=)" not in got


@pytest.mark.spec("P1")
def test_a_local_name_hides_the_modules_modal_value() -> None:
    got = names(
        """
        import modal
        image = modal.Image.debian_slim()

        def save(path):
            from PIL import Image
            image = Image.open(path)
            image.save(path)
        """
    )
    assert "Image.debian_slim" in got
    assert "Image.save" not in got


@pytest.mark.spec("P1")
def test_self_attributes_and_sandbox_streams() -> None:
    got = names(
        """
        import modal

        class Runner:
            def start(self):
                self.sb = modal.Sandbox.create()

            def run(self):
                p = self.sb.exec("ls")
                p.stdout.read()
                self.sb.terminate()
        """
    )
    assert {"Sandbox.exec", "ContainerProcess.stdout", "StreamReader.read"} <= got
    assert "Sandbox.terminate" in got


@pytest.mark.spec("P1")
def test_statuses_come_from_the_parity_doc_and_ketchs_signatures() -> None:
    statuses = men.parity_statuses(men.DOC)
    assert statuses["App.function"] == "works"
    assert statuses["App(image=)"] == "works"
    assert "exception.NotFoundError" in statuses
    assert men.ketch_status("App.function(gpu=)") == "keyword accepted"
    assert men.ketch_status("App.function(no_such_option=)") == "keyword not accepted"
    assert men.ketch_status("Image.no_such_method") == "unlisted; ketch lacks it"
