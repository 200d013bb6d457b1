"""Custom domains: one endpoint answering for several names, exact or wildcard.

Point the names' DNS at this machine (or put ketch behind your proxy) and requests for them
reach the endpoint through the gateway's port. Here the entrypoint sets the Host header
itself, so the example runs without any DNS change.
"""

import json
import subprocess
import sys
import urllib.request

import ketch

app = ketch.App("custom-domains-example")


@app.function()
@ketch.fastapi_endpoint(custom_domains=["api.example.com", "api.example.net"])
def hello(message: str) -> dict[str, str]:
    return {"message": f"hello {message}"}


@app.function()
@ketch.fastapi_endpoint(custom_domains=["*.wild.example.org"])
def wildcard(message: str) -> dict[str, str]:
    return {"message": f"wildcard {message}"}


@app.local_entrypoint()
def main() -> None:
    status = subprocess.run(
        [sys.executable, "-m", "ketch.cli", "server", "status", "--json"],
        capture_output=True,
        text=True,
        check=True,
    )
    gateway = json.loads(status.stdout)["gateway"]
    for host in ("api.example.com", "api.example.net", "7.wild.example.org"):
        req = urllib.request.Request(f"{gateway}/?message=world", headers={"Host": host})
        with urllib.request.urlopen(req, timeout=60) as resp:
            print(f"{host}: {resp.read().decode()}")
