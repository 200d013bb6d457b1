"""What running code may ask about where it runs: in a container or not, and which input
(the container runtime sets the input ids, _runtime/entry.py)."""

from __future__ import annotations

import contextvars
import os
import sys

__all__ = [
    "current_function_call_id",
    "current_input_id",
    "interact",
    "is_local",
]

# Set by the runtime around each input (entry.py): a contextvar, so that inputs running at
# once on one container (max_inputs > 1, async functions) each see their own.
INPUT_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ketch_input_id", default=None
)
CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ketch_function_call_id", default=None
)


def is_local() -> bool:
    """True outside a ketch container (a script, a local entrypoint, `.local()` calls)."""
    return "KETCH_CONTAINER_ID" not in os.environ


def current_input_id() -> str | None:
    """The id of the input this code runs for, inside a container; None elsewhere."""
    return INPUT_ID.get()


def current_function_call_id() -> str | None:
    """The id of the spawned call this code runs for (`FunctionCall.from_id` takes it);
    None for a `.remote()` or `.map()` input, and outside a container."""
    return CALL_ID.get()


def interact() -> None:
    """Modal's way to read a terminal from inside a container. Here a container's stdin
    is never a terminal, so it is refused there; locally it is refused without a terminal
    and otherwise does nothing (the script already reads its own terminal)."""
    from ketch.exception import InvalidError

    if not is_local():
        raise InvalidError(
            "ketch.interact() is not available inside a container: containers have no "
            "terminal; pass input as arguments, or use a Queue or Dict to talk to them"
        )
    if not sys.stdin.isatty():
        raise InvalidError(
            "ketch.interact() needs a terminal on stdin, and this process's stdin is not "
            "one; run it from a terminal, or leave interact() out"
        )
