"""The names `import ketch` exports are the public API: this pins them, so that adding or
dropping one is a decision made in review, not an accident of an import."""

from __future__ import annotations

import types

import ketch

EXPORTED = [
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


def test_all_is_pinned() -> None:
    assert sorted(ketch.__all__) == EXPORTED
    assert len(set(ketch.__all__)) == len(ketch.__all__)


def test_every_export_exists_and_is_documented() -> None:
    for name in ketch.__all__:
        value = getattr(ketch, name)
        assert (value.__doc__ or "").strip(), f"ketch.{name} has no docstring"


def test_public_names_outside_all_are_modules_or_private() -> None:
    # A public-looking attribute not in __all__ is either a submodule (ketch.app, ...) or a
    # leak of an implementation name into the package namespace.
    stray = [
        name
        for name, value in vars(ketch).items()
        if not name.startswith("_")
        and name not in ketch.__all__
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    ]
    assert stray == [], f"exported without being in __all__: {stray}"
