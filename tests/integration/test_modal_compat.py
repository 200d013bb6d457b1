"""A script written for Modal runs unchanged under `ketch run` and `ketch deploy` (C7),
including inside the containers, which import the module and with it `modal`."""

from __future__ import annotations

import json
import uuid

import pytest
from cli_support import env_for, ketch, ok, python, write

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


    @app.function()
    @modal.fastapi_endpoint()
    def greet(who: str = "world") -> str:
        return f"hello {{who}}"


    @app.function(timeout=1)
    def sleepy() -> None:
        import time
        time.sleep(30)


    @app.local_entrypoint()
    def main(x: int = 3):
        import json
        import urllib.request

        with urllib.request.urlopen(greet.get_web_url() + "?who=modal", timeout=60) as resp:
            print("WEB", json.loads(resp.read()))
        try:
            sleepy.remote()
        except modal.exception.FunctionTimeoutError:
            print("TIMEOUT caught")
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
    for line in (
        "RESULT 10",
        "SPAWNED 12",
        "LOOKUP caught NotFoundError",
        "CLS 105",
        "LOCAL NotFoundError",
        "WEB hello modal",
        "TIMEOUT caught",
    ):
        assert line in out, out
    assert "container modal: True True ahoy" in out


def test_modal_script_deploys_unchanged(server, modal_script) -> None:
    name, path = modal_script
    ok(ketch(server.home, "deploy", str(path)))
    # Called from a plain Python process that never imports modal.
    out = ok(
        python(
            server.home,
            f"""
        import ketch
        print(ketch.Function.from_name({name!r}, "double").remote(21))
        print(ketch.Function.from_name({name!r}, "missing_lookup").remote())
        import httpx
        url = ketch.Function.from_name({name!r}, "greet").get_web_url()
        print(httpx.get(url, params={{"who": "there"}}, timeout=60).json())
    """,
        )
    )
    assert out.split() == ["42", "caught", "NotFoundError", "hello", "there"]
    ketch(server.home, "app", "stop", name, "-y")


# -- the opt-in shim for plain Python processes ----------------------------------------------

PLAIN_SCRIPT = """
    import modal
    from modal.exception import NotFoundError

    app = modal.App("{name}")


    @app.function()
    def shout(text: str) -> str:
        return text.upper()


    if __name__ == "__main__":
        with app.run():
            print("SHOUT", shout.remote("ahoy"), modal.__name__, NotFoundError.__module__)
"""


def _site_python(home, site: str, code: str, *, cwd=None, extra_path: str = ""):  # type: ignore[no-untyped-def]
    """A plain Python process whose site directories include `site` (the way a venv's
    site-packages is one), so that .pth files there are honoured."""
    import os
    import subprocess
    import sys
    import textwrap

    env = env_for(home)
    if extra_path:
        env["PYTHONPATH"] = extra_path + os.pathsep + env["PYTHONPATH"]
    prelude = f"import site; site.addsitedir({site!r})\n"
    return subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_compat_install_makes_import_modal_work_in_plain_python(server, tmp_path) -> None:
    from cli_support import assert_clean_error

    site, scripts = tmp_path / "site", tmp_path / "bin"
    name = f"plain-{uuid.uuid4().hex[:8]}"
    pkg = tmp_path / "proj" / "mypkg"
    write(pkg / "__init__.py", "")
    write(pkg / "job.py", PLAIN_SCRIPT.format(name=name))
    # What `python -m mypkg.job` does, after the site directory is read.
    run_module = "import runpy; runpy._run_module_as_main('mypkg.job')"

    # Off: `import modal` fails as it would anywhere without modal.
    off = _site_python(server.home, str(site), run_module, cwd=tmp_path / "proj")
    assert off.returncode != 0 and "No module named 'modal'" in off.stderr

    out = ok(
        ketch(
            server.home, "compat", "install", "--target", str(site), "--scripts-dir", str(scripts)
        )
    )
    assert "ketch_modal_shim.pth" in out
    st = json.loads(
        ok(
            ketch(
                server.home,
                "compat",
                "status",
                "--target",
                str(site),
                "--scripts-dir",
                str(scripts),
                "--json",
            )
        )
    )
    assert st["installed"] is True and st["real_modal_installed"] is False
    assert st["modal_command"] == str(scripts / "modal")

    # On: `python -m mypkg.job` (as runpy does it) calls app.run() on ketch.
    on = _site_python(server.home, str(site), run_module, cwd=tmp_path / "proj")
    assert on.returncode == 0, on.stderr
    assert "SHOUT AHOY ketch ketch.exception" in on.stdout

    # The `modal` command forwards to ketch while the shim is on, and refuses when off.
    forward = _site_python(
        server.home,
        str(site),
        """
        import sys
        from ketch.compat.forward import main
        sys.argv = ["modal", "app", "list", "--json"]
        sys.exit(main())
    """,
    )
    assert forward.returncode == 0, forward.stderr
    assert isinstance(json.loads(forward.stdout), list)
    import subprocess

    refused = subprocess.run(
        [str(scripts / "modal"), "app", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env_for(server.home),
    )
    assert refused.returncode == 2 and "shim is off" in refused.stderr

    out = ok(
        ketch(
            server.home, "compat", "uninstall", "--target", str(site), "--scripts-dir", str(scripts)
        )
    )
    assert "removed" in out
    assert not (site / "ketch_modal_shim.pth").exists() and not (scripts / "modal").exists()
    again = _site_python(server.home, str(site), run_module, cwd=tmp_path / "proj")
    assert again.returncode != 0 and "No module named 'modal'" in again.stderr

    # Where a real modal is importable the shim is refused, and nothing is written.
    fake = tmp_path / "fake"
    write(fake / "modal" / "__init__.py", "REAL = True\n")
    proc = ketch(
        server.home,
        "compat",
        "install",
        "--target",
        str(site),
        "--scripts-dir",
        str(scripts),
        PYTHONPATH=f"{fake}:{env_for(server.home)['PYTHONPATH']}",
    )
    assert_clean_error(proc, "InvalidError", "real `modal` package is installed")
    assert not (site / "ketch_modal_shim.pth").exists()
