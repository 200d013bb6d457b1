"""Protecting web endpoints: ketch's proxy auth tokens, or a bearer token checked by the
handler itself.

    ketch run examples/web_auth.py
    ketch token create                      # prints a wk-... id and a ws-... secret
    curl -H "Modal-Key: wk-..." -H "Modal-Secret: ws-..." "$PROTECTED_URL"
    curl -H "Authorization: Bearer secret-random-token" "$BEARER_URL"

Both functions are web endpoints, so the module may import FastAPI at the top.
"""

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

import ketch

app = ketch.App("web-auth")

auth_scheme = HTTPBearer()


@app.function()
@ketch.fastapi_endpoint(requires_proxy_auth=True)
def protected() -> str:
    # Reached only with a valid token; its headers were removed on the way in.
    return "authenticated!"


# In real use: ketch secret create my-web-auth-token AUTH_TOKEN=... and
# ketch.Secret.from_name("my-web-auth-token").
@app.function(secrets=[ketch.Secret.from_dict({"AUTH_TOKEN": "secret-random-token"})])
@ketch.fastapi_endpoint()
async def bearer(
    request: Request, token: HTTPAuthorizationCredentials = Depends(auth_scheme)
) -> str:
    if token.credentials != os.environ["AUTH_TOKEN"]:
        raise HTTPException(
            status_code=status.HTTP_401_UNAUTHORIZED,
            detail="Incorrect bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return "success!"


def get(url: str, headers: dict[str, str]) -> str:
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=60
        ) as resp:
            return f"{resp.status} {resp.read().decode().strip()}"
    except urllib.error.HTTPError as err:
        return f"{err.code} {err.read().decode().strip()}"


def ketch_cli(*args: str) -> str:
    """The ketch command line, against the same server as this run."""
    done = subprocess.run(
        [sys.executable, "-m", "ketch.cli", *args], capture_output=True, text=True, check=True
    )
    return done.stdout


@app.local_entrypoint()
def main() -> None:
    url = str(protected.get_web_url())
    print("protected, no token:", get(url, {}))
    token = json.loads(ketch_cli("token", "create", "--json"))
    creds = {"Modal-Key": token["token_id"], "Modal-Secret": token["secret"]}
    print("protected, with a token:", get(url, creds))
    ketch_cli("token", "revoke", token["token_id"])
    print("protected, token revoked:", get(url, creds))

    url = str(bearer.get_web_url())
    print("bearer, wrong token:", get(url, {"Authorization": "Bearer guess"}))
    print("bearer, right token:", get(url, {"Authorization": "Bearer secret-random-token"}))
