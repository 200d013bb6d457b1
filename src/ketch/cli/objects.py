"""`ketch dict …` and `ketch queue …`: look at and manage named Dicts and Queues."""

from __future__ import annotations

import json
import pickle
import time
from typing import Any

import click

from ketch.cli import cli
from ketch.cli.apps import _environment

_ENV_HELP = "Environment (default: the configured one, usually main)."


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


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _run(coro: Any) -> Any:
    from ketch._utils.aio import run_sync

    return run_sync(coro)


# -- dict ---------------------------------------------------------------------------------
@cli.group("dict")
def dict_group() -> None:
    """Named Dicts: list, read, delete."""


@dict_group.command("list")
@click.option("--env", "environment", default=None, help=_ENV_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dict_list(environment: str | None, as_json: bool) -> None:
    """List the named Dicts of an environment."""
    from ketch.dict import Dict

    rows = _run(Dict.objects._info(environment_name=_environment(environment)))
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("No Dicts.")
    for r in rows:
        click.echo(f"{r['name']}\t{r['entries']} entries\t{r['bytes']} bytes\t"
                   f"created {_when(r['created'])}")


@dict_group.command("get")
@click.argument("name")
@click.argument("key")
@click.option("--env", "environment", default=None, help=_ENV_HELP)
def dict_get(name: str, key: str, environment: str | None) -> None:
    """Print the value stored under the string KEY."""
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
@click.option("--env", "environment", default=None, help=_ENV_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def dict_items(name: str, n: int | None, environment: str | None, as_json: bool) -> None:
    """Print the entries (the first N only, if given), in insertion order."""
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
@click.option("--env", "environment", default=None, help=_ENV_HELP)
def dict_clear(name: str, environment: str | None) -> None:
    """Remove every entry (the Dict itself stays)."""
    from ketch.dict import Dict

    Dict.from_name(name, environment_name=_environment(environment)).clear()
    click.echo(f"Cleared Dict {name!r}.")


@dict_group.command("delete")
@click.argument("name")
@click.option("--env", "environment", default=None, help=_ENV_HELP)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def dict_delete(name: str, environment: str | None, yes: bool) -> None:
    """Delete a Dict and all its entries."""
    from ketch.dict import Dict

    # Resolve first: a bad or missing name fails before any question is asked.
    Dict.from_name(name, environment_name=_environment(environment)).hydrate()
    if not yes:
        click.confirm(f"Delete Dict {name!r} and everything in it?", abort=True)
    Dict.delete(name, environment_name=_environment(environment))
    click.echo(f"Deleted Dict {name!r}.")


# -- queue --------------------------------------------------------------------------------
@cli.group("queue")
def queue_group() -> None:
    """Named Queues: list, inspect, clear, delete."""


@queue_group.command("list")
@click.option("--env", "environment", default=None, help=_ENV_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def queue_list(environment: str | None, as_json: bool) -> None:
    """List the named Queues of an environment."""
    from ketch.queue import Queue

    rows = _run(Queue.objects._info(environment_name=_environment(environment)))
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("No Queues.")
    for r in rows:
        click.echo(f"{r['name']}\t{r['items']} items\t{r['partitions']} partitions\t"
                   f"created {_when(r['created'])}")


@queue_group.command("len")
@click.argument("name")
@click.option("--partition", default=None, help="A partition (default: the default one).")
@click.option("--total", is_flag=True, help="Count every partition.")
@click.option("--env", "environment", default=None, help=_ENV_HELP)
def queue_len(name: str, partition: str | None, total: bool, environment: str | None) -> None:
    """Print how many items wait in a partition (or in all, with --total)."""
    from ketch.queue import Queue

    q = Queue.from_name(name, environment_name=_environment(environment))
    click.echo(str(q.len(partition=partition, total=total)))


@queue_group.command("peek")
@click.argument("name")
@click.argument("n", type=click.IntRange(min=1), default=1)
@click.option("--partition", default=None, help="A partition (default: the default one).")
@click.option("--env", "environment", default=None, help=_ENV_HELP)
def queue_peek(name: str, n: int, partition: str | None, environment: str | None) -> None:
    """Print the next N items without removing them."""
    from ketch.queue import Queue

    q = Queue.from_name(name, environment_name=_environment(environment))
    shown, after = 0, 0
    while shown < n:
        items = _run(q._op("next", partition=partition, after=after, timeout=0.0))["items"]
        if not items:
            break
        for seq, value in items[:n - shown]:
            after = seq
            shown += 1
            click.echo(repr(_show(value)))


@queue_group.command("clear")
@click.argument("name")
@click.option("--partition", default=None, help="A partition (default: the default one).")
@click.option("--all", "all_", is_flag=True, help="Clear every partition.")
@click.option("--env", "environment", default=None, help=_ENV_HELP)
def queue_clear(name: str, partition: str | None, all_: bool, environment: str | None) -> None:
    """Remove the items of a partition (or of all, with --all)."""
    from ketch.queue import Queue

    Queue.from_name(name, environment_name=_environment(environment)).clear(
        partition=partition, all=all_)
    click.echo(f"Cleared Queue {name!r}.")


@queue_group.command("delete")
@click.argument("name")
@click.option("--env", "environment", default=None, help=_ENV_HELP)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def queue_delete(name: str, environment: str | None, yes: bool) -> None:
    """Delete a Queue and its items."""
    from ketch.queue import Queue

    # Resolve first: a bad or missing name fails before any question is asked.
    Queue.from_name(name, environment_name=_environment(environment)).hydrate()
    if not yes:
        click.confirm(f"Delete Queue {name!r} and its items?", abort=True)
    Queue.delete(name, environment_name=_environment(environment))
    click.echo(f"Deleted Queue {name!r}.")
