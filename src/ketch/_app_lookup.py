"""`App.lookup`: a handle on a deployed app by name, deployed empty on request."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ketch._utils.labels import NAME_PATTERN, NAME_RULE
from ketch.exception import InvalidError

if TYPE_CHECKING:
    from ketch.app import App


async def lookup_app(
    name: str, *, environment_name: str | None = None, create_if_missing: bool = False
) -> App:
    """The deployed app `name` (its `app_id` set, so sandboxes can be created in it and
    its functions reached); `create_if_missing=True` deploys one with no functions when
    none runs. NotFoundError otherwise."""
    from ketch._client.client import Client
    from ketch._client.deploy import ApiClient
    from ketch.app import App

    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise InvalidError(f"App.lookup: invalid app name {name!r}: {NAME_RULE}")
    client = await Client.current()
    environment = environment_name or client.config.environment
    found = await ApiClient(client.config).call(
        "POST",
        f"/v1/apps/{name}/lookup",
        params={
            "environment": environment,
            "create_if_missing": "true" if create_if_missing else "false",
        },
    )
    app = App(name)
    app._app_id = found["app_id"]
    app._function_ids = dict(found["functions"])
    return app
