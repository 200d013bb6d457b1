"""ketch: a self-hosted serverless platform for Python with Modal's programming model."""

from __future__ import annotations

import typing as _typing

from ketch import exception
from ketch._partial import batched, concurrent
from ketch.app import App
from ketch.cls import Cls, enter, exit, method, parameter
from ketch.dict import Dict
from ketch.functions import Function, FunctionCall
from ketch.image import Image
from ketch.queue import Queue
from ketch.retries import Retries
from ketch.secret import Secret
from ketch.volume import Volume
from ketch.web import asgi_app, fastapi_endpoint, web_endpoint, web_server, wsgi_app

__version__ = "0.1.0"

__all__ = [
    "App",
    "Cls",
    "Dict",
    "Function",
    "FunctionCall",
    "Image",
    "Queue",
    "Retries",
    "Secret",
    "Volume",
    "asgi_app",
    "batched",
    "concurrent",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "method",
    "parameter",
    "web_endpoint",
    "web_server",
    "wsgi_app",
]


def __getattr__(name: str) -> _typing.Any:
    if name == "Stub":
        from ketch.exception import deprecation_warning

        deprecation_warning((2024, 4, 29), "ketch.Stub is deprecated; use ketch.App")
        return App
    raise AttributeError(f"module 'ketch' has no attribute {name!r}")
