"""The official `modal` client (from PyPI, one virtual environment per supported version)
against a real ketch server with the Modal front end on (`--modal-wire`): SPEC M1-M4."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from supports import modal_wire
from supports.modal_wire import NEWEST, VERSIONS, WireServer

SUPPORTS = Path(__file__).resolve().parent.parent / "supports"

# Client environments are installed from PyPI on first use (about a minute each).
pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def wire(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WireServer]:
    with modal_wire.wire_server(tmp_path_factory.mktemp("wire-home")) as server:
        yield server


def _app_dir(tmp_path: Path, source: str) -> Path:
    shutil.copy(SUPPORTS / source, tmp_path / "app.py")
    return tmp_path


@pytest.mark.spec("M1")
@pytest.mark.spec("M2")
@pytest.mark.spec("M3")
@pytest.mark.parametrize("version", VERSIONS)
def test_modal_run_remote_map_and_exception(wire: WireServer, tmp_path: Path, version: str) -> None:
    token_file = str(wire.home / "token")
    app_dir = _app_dir(tmp_path, "modal_wire_app.py")
    # tmp_path is in the directory the test session shares with sandboxed containers.
    counter = tmp_path / "attempts"
    counter.mkdir()
    proc = wire.modal(
        version, "run", "app.py", "--probe", token_file, "--counter", str(counter), cwd=app_dir
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "remote: 49" in out
    # Modal's runtime ran in a ketch container: sandboxed, the server's state is hidden.
    assert Path(token_file).is_file()
    if shutil.which("bwrap"):
        assert "container sees the server token: False" in out
    assert f"map: {sum(x * x for x in range(100))}" in out
    # A 5 MiB argument and result go through BlobCreate / BlobGet and their URLs.
    assert f"blob: {5 * 1024 * 1024} intact" in out
    # The remote exception comes back with its type and message.
    assert "caught: ValueError boom from the container" in out
    # retries=modal.Retries(max_retries=2): two failed attempts, the third returns.
    assert "retried until attempt 3" in out
    assert sorted(p.name for p in counter.iterdir()) == ["1", "2", "3"]
    # timeout= is enforced by ketch: the call fails with Modal's own FunctionTimeoutError.
    assert "timed out: FunctionTimeoutError" in out
    assert "after the timeout: 9" in out
    # What the containers printed reached the CLI through AppGetLogs.
    assert "squaring 7" in out and "squaring 99" in out
    # The ephemeral app's containers are gone once the run is over.
    assert modal_wire.running_containers(wire.home) == []


@pytest.mark.spec("M4")
@pytest.mark.parametrize("version", VERSIONS)
def test_wrong_token_pair_is_refused(wire: WireServer, tmp_path: Path, version: str) -> None:
    proc = wire.modal(
        version,
        "run",
        "app.py",
        cwd=_app_dir(tmp_path, "modal_wire_app.py"),
        MODAL_TOKEN_SECRET="as-" + "0" * 40,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "ketch refused the Modal token pair" in out
    assert "remote:" not in out


@pytest.mark.spec("M4")
def test_unsupported_client_version_is_refused_with_the_range(
    wire: WireServer, tmp_path: Path
) -> None:
    probe = tmp_path / "probe.py"
    shutil.copy(SUPPORTS / "modal_wire_probe.py", probe)
    answers = {v: _probe(wire, probe, "hello", v) for v in ("0.73.0", "1.7.0", "1.6.4")}
    assert answers["1.6.4"]["status"] == "OK"
    for version in ("0.73.0", "1.7.0"):
        assert answers[version]["status"] == "FAILED_PRECONDITION"
        assert f"modal client {version} is not supported" in answers[version]["message"]
        assert ">=1.5.0, <1.7.0" in answers[version]["message"]


@pytest.mark.spec("M4")
def test_unimplemented_rpc_names_itself(wire: WireServer, tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    shutil.copy(SUPPORTS / "modal_wire_probe.py", probe)
    answer = _probe(wire, probe, "volume")
    assert answer["status"] == "UnimplementedError"
    assert "VolumeGetOrCreate is not implemented" in answer["message"]
    assert "volumes" in answer["message"]


def _probe(wire: WireServer, probe: Path, *args: str) -> dict[str, str]:
    proc = wire.python(NEWEST, probe, *args, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answer: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.spec("M1")
def test_server_status_names_the_front_end(wire: WireServer) -> None:
    import subprocess
    import sys

    env = {**wire.env(), "KETCH_HOME": str(wire.home)}
    proc = subprocess.run(
        [sys.executable, "-m", "ketch.cli", "server", "status", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["modal_wire"] == wire.url
    assert wire.url.startswith("http://127.0.0.1:")


def _client(wire: WireServer, version: str, tmp_path: Path, *args: str) -> dict[str, str]:
    script = tmp_path / "client.py"
    if not script.exists():
        shutil.copy(SUPPORTS / "modal_wire_client.py", script)
    proc = wire.python(version, script, *args, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    answer: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    return answer


@pytest.mark.spec("M1")
@pytest.mark.spec("M2")
def test_deploy_from_name_redeploy_list_and_stop(wire: WireServer, tmp_path: Path) -> None:
    app_dir = _app_dir(tmp_path, "modal_wire_deployed.py")
    deployed = wire.modal(VERSIONS[0], "deploy", "app.py", cwd=app_dir)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert "App deployed" in deployed.stdout
    # Called from plain Python processes of either supported client.
    for version in VERSIONS:
        assert _client(wire, version, tmp_path, "greet", "ketch") == {"result": "hello ketch v1"}
    # A redeploy (by the other client version) replaces the code behind the name.
    source = app_dir / "app.py"
    source.write_text(source.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
    again = wire.modal(VERSIONS[1], "deploy", "app.py", cwd=app_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _client(wire, VERSIONS[0], tmp_path, "greet", "ketch") == {"result": "hello ketch v2"}

    listed = wire.modal(VERSIONS[0], "app", "list", "--json", cwd=app_dir)
    assert listed.returncode == 0, listed.stderr
    rows = [r for r in json.loads(listed.stdout) if r["description"] == "wire-deployed"]
    assert [r["state"] for r in rows] == ["deployed"]

    stopped = wire.modal(VERSIONS[0], "app", "stop", "wire-deployed", "--yes", cwd=app_dir)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    gone = _client(wire, VERSIONS[0], tmp_path, "greet", "ketch")
    assert gone["error"] == "NotFoundError"
    assert "no app named 'wire-deployed' is deployed" in gone["message"]
    listed = wire.modal(VERSIONS[0], "app", "list", "--json", cwd=app_dir)
    rows = [r for r in json.loads(listed.stdout) if r["description"] == "wire-deployed"]
    assert [r["state"] for r in rows] == ["stopped"]


@pytest.mark.spec("M2")
def test_spawn_then_function_call_from_id(wire: WireServer, tmp_path: Path) -> None:
    app_dir = _app_dir(tmp_path, "modal_wire_deployed.py")
    deployed = wire.modal(VERSIONS[0], "deploy", "app.py", cwd=app_dir)
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    # tmp_path is in the directory the test session shares with sandboxed containers.
    gate = tmp_path / "gate"
    spawned = _client(wire, VERSIONS[0], tmp_path, "spawn", str(gate))
    call_id = spawned["call_id"]
    assert call_id.startswith("fc-")
    # Another process, of the other client version, polls the call by its id.
    early = _client(wire, VERSIONS[1], tmp_path, "get", call_id, "0")
    assert early["error"] == "TimeoutError"
    gate.write_text("now")
    assert _client(wire, VERSIONS[1], tmp_path, "get", call_id, "60") == {"result": "released now"}
    wire.modal(VERSIONS[0], "app", "stop", "wire-deployed", "--yes", cwd=app_dir)
