"""`ketch dict …` and `ketch queue …`: look at and manage named Dicts and Queues."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

import click

from ketch.cli import cli
from ketch.cli.apps import _environment
from ketch.cli.output import clock, echo_json, env_option, json_option, yes_option


def _show(data: bytes) -> Any:
    """A stored value, or a note saying why it cannot be shown here (its class may live
    only in the app's code)."""
    try:
        return pickle.loads(data)
    except Exception as exc:
        return _Opaque(f"<{len(data)} bytes that cannot be unpickled here: {exc}>")


class _Opaque(str):
    def __repr__(self) -> str:
        return str(self)


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _run(coro: Any) -> Any:
    from ketch._utils.aio import run_sync

    return run_sync(coro)


def _list(
    cls: Any, environment: str | None, as_json: bool, sizes: Callable[[dict[str, Any]], str]
) -> None:
    """The named Dicts or Queues of an environment: a line each, or one JSON list."""
    rows = _run(cls.objects._info(environment_name=_environment(environment)))
    if as_json:
        echo_json(rows)
        return
    if not rows:
        click.echo(f"No {cls._title}s.")
    for r in rows:
        click.echo(f"{r['name']}\t{sizes(r)}\tcreated {clock(r['created'])}")


def _delete(cls: Any, name: str, environment: str | None, yes: bool, contents: str) -> None:
    # Resolve first: a bad or missing name fails before any question is asked.
    cls.from_name(name, environment_name=_environment(environment)).hydrate()
    if not yes:
        click.confirm(f"Delete {cls._title} {name!r} and {contents}?", abort=True)
    cls.delete(name, environment_name=_environment(environment))
    click.echo(f"Deleted {cls._title} {name!r}.")


# -- dict ---------------------------------------------------------------------------------
@cli.group("dict")
def dict_group() -> None:
    """Named Dicts: list, read, delete.

    \b
    Example:
      ketch dict items my-cache 10
    """


@dict_group.command("list")
@env_option
@json_option
def dict_list(environment: str | None, as_json: bool) -> None:
    """List the named Dicts of an environment.

    \b
    Example:
      ketch dict list --json
    """
    from ketch.dict import Dict

    _list(Dict, environment, as_json, lambda r: f"{r['entries']} entries\t{r['bytes']} bytes")


@dict_group.command("get")
@click.argument("name")
@click.argument("key")
@env_option
def dict_get(name: str, key: str, environment: str | None) -> None:
    """Print the value stored under the string KEY.

    \b
    Example:
      ketch dict get my-cache user-42
    """
    from ketch._client.objects import dump_key
    from ketch.dict import Dict
    from ketch.exception import NotFoundError

    d = Dict.from_name(name, environment_name=_environment(environment))
    reply = _run(d._op("get", key=dump_key(key)))
    if not reply["found"]:
        raise NotFoundError(f"Dict {name!r} has no key {key!r}")
    click.echo(repr(_show(reply["value"])))


@dict_group.command("items")
@click.argument("name")
@click.argument("n", type=click.IntRange(min=1), required=False)
@env_option
@json_option
def dict_items(name: str, n: int | None, environment: str | None, as_json: bool) -> None:
    """Print the entries (the first N only, if given), in insertion order.

    \b
    Example:
      ketch dict items my-cache
    """
    from ketch.dict import Dict

    d = Dict.from_name(name, environment_name=_environment(environment))
    pairs: list[tuple[Any, Any]] = []
    after = 0
    while n is None or len(pairs) < n:
        rows = _run(d._op("scan", after=after, limit=min(n or 1000, 1000)))["rows"]
        if not rows:
            break
        for seq, key, value in rows:
            after = seq
            pairs.append((_show(key), _show(value)))
    pairs = pairs[:n] if n is not None else pairs
    if as_json:
        click.echo(json.dumps([[_jsonable(k), _jsonable(v)] for k, v in pairs]))
        return
    for key, value in pairs:
        click.echo(f"{key!r}\t{value!r}")


@dict_group.command("clear")
@click.argument("name")
@env_option
def dict_clear(name: str, environment: str | None) -> None:
    """Remove every entry (the Dict itself stays).

    \b
    Example:
      ketch dict clear my-cache
    """
    from ketch.dict import Dict

    Dict.from_name(name, environment_name=_environment(environment)).clear()
    click.echo(f"Cleared Dict {name!r}.")


@dict_group.command("delete")
@click.argument("name")
@env_option
@yes_option
def dict_delete(name: str, environment: str | None, yes: bool) -> None:
    """Delete a Dict and all its entries.

    \b
    Example:
      ketch dict delete my-cache -y
    """
    from ketch.dict import Dict

    _delete(Dict, name, environment, yes, "everything in it")


# -- queue --------------------------------------------------------------------------------
@cli.group("queue")
def queue_group() -> None:
    """Named Queues: list, inspect, clear, delete.

    \b
    Example:
      ketch queue len jobs --total
    """


@queue_group.command("list")
@env_option
@json_option
def queue_list(environment: str | None, as_json: bool) -> None:
    """List the named Queues of an environment.

    \b
    Example:
      ketch queue list --json
    """
    from ketch.queue import Queue

    _list(
        Queue, environment, as_json, lambda r: f"{r['items']} items\t{r['partitions']} partitions"
    )


@queue_group.command("len")
@click.argument("name")
@click.option("--partition", default=None, help="A partition (default: the default one).")
@click.option("--total", is_flag=True, help="Count every partition.")
@env_option
def queue_len(name: str, partition: str | None, total: bool, environment: str | None) -> None:
    """Print how many items wait in a partition (or in all, with --total).

    \b
    Example:
      ketch queue len jobs --total
    """
    from ketch.queue import Queue

    q = Queue.from_name(name, environment_name=_environment(environment))
    click.echo(str(q.len(partition=partition, total=total)))


@queue_group.command("peek")
@click.argument("name")
@click.argument("n", type=click.IntRange(min=1), default=1)
@click.option("--partition", default=None, help="A partition (default: the default one).")
@env_option
def queue_peek(name: str, n: int, partition: str | None, environment: str | None) -> None:
    """Print the next N items without removing them.

    \b
    Example:
      ketch queue peek jobs
    """
    from ketch.queue import Queue

    q = Queue.from_name(name, environment_name=_environment(environment))
    shown, after = 0, 0
    while shown < n:
        items = _run(q._op("next", partition=partition, after=after, timeout=0.0))["items"]
        if not items:
            break
        for seq, value in items[: n - shown]:
            after = seq
            shown += 1
            click.echo(repr(_show(value)))


@queue_group.command("clear")
@click.argument("name")
@click.option("--partition", default=None, help="A partition (default: the default one).")
@click.option("--all", "all_", is_flag=True, help="Clear every partition.")
@env_option
def queue_clear(name: str, partition: str | None, all_: bool, environment: str | None) -> None:
    """Remove the items of a partition (or of all, with --all).

    \b
    Example:
      ketch queue clear jobs --all
    """
    from ketch.queue import Queue

    Queue.from_name(name, environment_name=_environment(environment)).clear(
        partition=partition, all=all_
    )
    click.echo(f"Cleared Queue {name!r}.")


@queue_group.command("delete")
@click.argument("name")
@env_option
@yes_option
def queue_delete(name: str, environment: str | None, yes: bool) -> None:
    """Delete a Queue and its items.

    \b
    Example:
      ketch queue delete jobs -y
    """
    from ketch.queue import Queue

    _delete(Queue, name, environment, yes, "its items")
