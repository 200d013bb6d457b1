"""ketch: a self-hosted serverless platform for Python with Modal's programming model."""

from __future__ import annotations

import typing as _typing

from ketch import exception
from ketch._current import current_function_call_id, current_input_id, interact, is_local
from ketch._forward import forward
from ketch._output import enable_output
from ketch._partial import batched, concurrent
from ketch.app import App
from ketch.cls import Cls, enter, exit, method, parameter
from ketch.dict import Dict
from ketch.functions import Function, FunctionCall
from ketch.image import Image
from ketch.queue import Queue
from ketch.retries import Retries
from ketch.sandbox import Sandbox, Tunnel
from ketch.schedule import Cron, Period
from ketch.secret import Secret
from ketch.volume import Volume
from ketch.web import asgi_app, fastapi_endpoint, web_endpoint, web_server, wsgi_app

__version__ = "0.1.0"

__all__ = [
    "App",
    "Cls",
    "Cron",
    "Dict",
    "Function",
    "FunctionCall",
    "Image",
    "Period",
    "Queue",
    "Retries",
    "Sandbox",
    "Secret",
    "Tunnel",
    "Volume",
    "asgi_app",
    "batched",
    "concurrent",
    "current_function_call_id",
    "current_input_id",
    "enable_output",
    "enter",
    "exception",
    "exit",
    "fastapi_endpoint",
    "forward",
    "interact",
    "is_local",
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
    if name == "gpu":
        # Modal's `modal.gpu.A10G(...)` after a bare `import modal`; deprecated, so not eager.
        import ketch.gpu

        return ketch.gpu
    raise AttributeError(f"module 'ketch' has no attribute {name!r}")
