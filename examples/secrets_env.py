"""Secrets and environment variables reach the function's containers (and only them).

    ketch run examples/secrets_env.py

For a secret kept on the server, create it once and refer to it by name:

    ketch secret create my-api API_KEY=...
    @app.function(secrets=[ketch.Secret.from_name("my-api", required_keys=["API_KEY"])])
"""

import os

import ketch

app = ketch.App("secrets-env")


@app.function(
    secrets=[ketch.Secret.from_dict({"SERVICE_USER": "demo-user"})],
    env={"GREETING_TARGET": "world"},  # shorthand for Secret.from_dict
)
def show_env() -> str:
    return f"user={os.environ['SERVICE_USER']} target={os.environ['GREETING_TARGET']}"


@app.local_entrypoint()
def main() -> None:
    print(show_env.remote())
    # The variables live in the container, not here.
    print("set locally:", "SERVICE_USER" in os.environ)
