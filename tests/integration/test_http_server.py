"""`ketch.experimental.http_server` (Modal's HTTP servers): a class's `@enter` starts a
server on a port and the class's one URL, from `_experimental_get_flash_urls()`, reaches it."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

import ketch
from supports import http_server_app
from supports.http_server_app import FILE_TEXT, app
from supports.web_helpers import api

# The class's handle (mypy keeps an @app.cls class's own type: python/mypy#3135).
FileServer: Any = http_server_app.FileServer


@pytest.mark.spec("W5")
def test_file_server_example_serves_a_file_while_the_app_runs(server: object) -> None:
    with app.run(show_logs=False):
        urls = FileServer._experimental_get_flash_urls()
        assert len(urls) == 1
        got = httpx.get(urls[0] + "/hello.txt", timeout=60)
        assert got.status_code == 200 and got.text == FILE_TEXT
        # The async form, from another event loop, gives the same list.
        assert asyncio.run(FileServer._experimental_get_flash_urls.aio()) == urls
    with pytest.raises(ketch.exception.InvalidError, match="is not running"):
        FileServer._experimental_get_flash_urls()


@pytest.mark.spec("W5")
def test_deployed_http_server_url_from_the_app_and_from_name(server: object) -> None:
    http_server_app.app.deploy()
    try:
        urls = FileServer._experimental_get_flash_urls()
        looked_up: Any = ketch.Cls.from_name(app.name or "", "FileServer")
        assert looked_up._experimental_get_flash_urls() == urls
        assert httpx.get(urls[0] + "/hello.txt", timeout=60).text == FILE_TEXT
    finally:
        api("POST", f"/v1/apps/{app.name}/stop")
