"""Secrets end to end (A10): created with the CLI, seen as environment variables in
containers only, never printed, stored encrypted; a missing one fails the deploy by name."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from cli_support import app_ids, assert_clean_error, deployed, ketch, ok, write

pytestmark = pytest.mark.spec("A10")


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


SECRETS_APP = """
    import hashlib
    import os

    import ketch

    app = ketch.App("{app_name}")


    def seen(*keys):
        # Report what the container sees by hash: the values themselves are never printed.
        return {{k: hashlib.sha256(os.environ[k].encode()).hexdigest() if k in os.environ
                 else None for k in keys}}


    @app.function(secrets=[ketch.Secret.from_name("{secret}")])
    def named():
        return seen("NAMED_TOKEN", "DICT_TOKEN")


    @app.function(
        secrets=[ketch.Secret.from_dict({{"DICT_TOKEN": "{dict_value}"}}),
                 ketch.Secret.from_local_environ(["LOCAL_TOKEN"])],
        env={{"PLAIN_SETTING": "{env_value}"}},
    )
    def inline():
        return seen("DICT_TOKEN", "LOCAL_TOKEN", "PLAIN_SETTING", "NAMED_TOKEN")


    @app.local_entrypoint()
    def main():
        import json
        print("NAMED", json.dumps(named.remote()))
        print("INLINE", json.dumps(inline.remote()))
        print("LOCAL", "DICT_TOKEN" in os.environ, "NAMED_TOKEN" in os.environ)
"""


def stored_bytes(home: Path, *, sources: bool) -> bytes:
    """What the server keeps on disk that a secret could leak into: database (WAL too),
    logs, app specs, and with `sources` the shipped user code."""
    skip = {"images", "runtime"} | (set() if sources else {"blobs", "sources"})
    # Joined once: adding each file to a growing bytes object copies it all every time,
    # which took over a minute on a session server's home late in the suite.
    parts = [
        path.read_bytes()
        for path in sorted(home.rglob("*"))
        if path.is_file() and not skip & set(path.relative_to(home).parts)
    ]
    return b"".join(parts)


def test_secrets_reach_containers_and_are_never_shown(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    secret = f"sec-{tag}"
    values = {
        "named": f"named-{uuid.uuid4().hex}",
        "dict": f"dict-{uuid.uuid4().hex}",
        "local": f"local-{uuid.uuid4().hex}",
        "env": f"env-{uuid.uuid4().hex}",
    }
    created = ketch(
        server.home, "secret", "create", secret, f"NAMED_TOKEN={values['named']}", "OTHER=x"
    )
    assert "NAMED_TOKEN" in ok(created) and values["named"] not in created.stdout + created.stderr

    app_file = write(
        tmp_path / "secrets_app.py",
        SECRETS_APP.format(
            app_name=f"secrets-{tag}",
            secret=secret,
            dict_value=values["dict"],
            env_value=values["env"],
        ),
    )
    proc = ketch(server.home, "run", str(app_file), LOCAL_TOKEN=values["local"])
    out = ok(proc)
    lines = {ln.split(" ", 1)[0]: ln.split(" ", 1)[1] for ln in out.splitlines() if " " in ln}
    assert json.loads(lines["NAMED"]) == {
        "NAMED_TOKEN": digest(values["named"]),
        "DICT_TOKEN": None,
    }
    assert json.loads(lines["INLINE"]) == {
        "DICT_TOKEN": digest(values["dict"]),
        "LOCAL_TOKEN": digest(values["local"]),
        "PLAIN_SETTING": digest(values["env"]),
        "NAMED_TOKEN": None,
    }
    assert lines["LOCAL"] == "False False"  # values live in the containers only

    listing = ok(ketch(server.home, "secret", "list")) + ok(
        ketch(server.home, "secret", "list", "--json")
    )
    assert secret in listing
    logs = ok(ketch(server.home, "app", "logs", f"secrets-{tag}"))
    on_disk = stored_bytes(server.home, sources=False)
    with_sources = stored_bytes(server.home, sources=True)
    for key, value in values.items():
        assert value not in proc.stdout + proc.stderr
        assert value not in listing and value not in logs
        assert value.encode() not in on_disk, key
        if key in ("named", "local"):
            # from_dict/env= values are literals in the shipped source; these two are not.
            assert value.encode() not in with_sources, key


def test_store_is_not_plaintext_even_for_the_db_file(server) -> None:
    name = f"plain-{uuid.uuid4().hex[:8]}"
    value = f"value-{uuid.uuid4().hex}"
    ok(ketch(server.home, "secret", "create", name, f"K={value}"))
    db_files = [p for p in server.home.iterdir() if p.name.startswith("ketch.db")]
    assert db_files
    blob = b"".join(p.read_bytes() for p in db_files)
    assert name.encode() in blob  # the row is there (the search would find plaintext)...
    assert value.encode() not in blob  # ...but its value is not readable
    ok(ketch(server.home, "secret", "delete", name))


def test_missing_named_secret_fails_the_deploy_and_writes_nothing(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    app_file = write(
        tmp_path / "needs_secret.py",
        f"""
        import ketch

        app = ketch.App("needs-secret-{tag}")


        @app.function(secrets=[ketch.Secret.from_name("absent-{tag}")])
        def f():
            return 1
    """,
    )
    before = app_ids(server.home)
    for command in ("deploy", "run"):
        assert_clean_error(
            ketch(server.home, command, str(app_file)), "NotFoundError", f"'absent-{tag}'"
        )
    assert app_ids(server.home) == before
    assert deployed(server.home, f"needs-secret-{tag}") is None


def test_required_keys_are_checked_at_deploy(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    present = f"present-{uuid.uuid4().hex}"
    ok(ketch(server.home, "secret", "create", f"partial-{tag}", f"USER={present}"))
    app_file = write(
        tmp_path / "required_keys.py",
        f"""
        import ketch

        app = ketch.App("required-keys-{tag}")


        @app.function(secrets=[ketch.Secret.from_name("partial-{tag}",
                                                      required_keys=["USER", "PASSWORD"])])
        def f():
            return 1
    """,
    )
    before = app_ids(server.home)
    proc = ketch(server.home, "deploy", str(app_file))
    line = assert_clean_error(proc, f"'partial-{tag}'", "PASSWORD")
    assert "USER" not in line.split("missing", 1)[-1]  # only the missing key is named
    assert present not in proc.stdout + proc.stderr
    assert app_ids(server.home) == before

    ok(ketch(server.home, "secret", "create", f"partial-{tag}", "USER=u", "PASSWORD=p", "--force"))
    ok(ketch(server.home, "deploy", str(app_file)))
    assert deployed(server.home, f"required-keys-{tag}") is not None


@pytest.mark.spec("C3")
def test_secret_cli_create_force_delete(server, tmp_path) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    ok(ketch(server.home, "secret", "create", name, "A=1"))
    assert_clean_error(
        ketch(server.home, "secret", "create", name, "A=2"), "AlreadyExistsError", "--force"
    )
    ok(ketch(server.home, "secret", "create", name, "A=2", "--force"))

    dotenv = write(tmp_path / ".env", "FROM_DOTENV=yes\n# comment\n")
    as_json = tmp_path / "s.json"
    as_json.write_text(json.dumps({"FROM_JSON": "yes"}))
    out = ok(
        ketch(
            server.home,
            "secret",
            "create",
            f"{name}-files",
            "--from-dotenv",
            str(dotenv),
            "--from-json",
            str(as_json),
        )
    )
    assert "FROM_DOTENV" in out and "FROM_JSON" in out

    proc = ketch(server.home, "secret", "create", f"{name}-bad", "NOEQUALS")
    assert proc.returncode == 2 and "KEY=VALUE" in proc.stderr
    assert_clean_error(
        ketch(server.home, "secret", "create", f"{name}-bad", "1BAD=x"), "InvalidError", "'1BAD'"
    )
    assert_clean_error(
        ketch(server.home, "secret", "create", "bad name!", "A=1"), "InvalidError", "'bad name!'"
    )

    rows = json.loads(ok(ketch(server.home, "secret", "list", "--json")))
    names = {r["name"] for r in rows}
    assert {name, f"{name}-files"} <= names and f"{name}-bad" not in names
    ok(ketch(server.home, "secret", "delete", name))
    assert_clean_error(ketch(server.home, "secret", "delete", name), "NotFoundError", name)
    assert name not in ok(ketch(server.home, "secret", "list")).split()


def test_missing_local_environ_key_is_named(server, tmp_path) -> None:
    tag = uuid.uuid4().hex[:8]
    app_file = write(
        tmp_path / "local_environ.py",
        f"""
        import ketch

        app = ketch.App("local-environ-{tag}")


        @app.function(secrets=[ketch.Secret.from_local_environ(["KETCH_TEST_UNSET_{tag}"])])
        def f():
            return 1
    """,
    )
    before = app_ids(server.home)
    assert_clean_error(
        ketch(server.home, "deploy", str(app_file)), "InvalidError", f"KETCH_TEST_UNSET_{tag}"
    )
    assert app_ids(server.home) == before
