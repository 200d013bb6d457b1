"""`ketch volume create | list | ls | put | get | rm | delete`."""

from __future__ import annotations

import os
import sys
from pathlib import Path, PurePosixPath

import click

from ketch.cli import cli
from ketch.cli.apps import _environment
from ketch.cli.output import clock, echo_json, env_option, json_option, yes_option


def _volume(name: str, environment: str | None) -> object:
    from ketch.volume import Volume

    vol = Volume.from_name(name, environment_name=_environment(environment))
    vol.hydrate()  # an unknown name fails here, before any file is touched
    return vol


@cli.group()
def volume() -> None:
    """Manage volumes: persistent directories that functions mount with volumes={...}.

    \b
    Example:
      ketch volume create weights
      ketch volume put weights ./model.bin /models/
      ketch volume ls weights /models
    """


@volume.command()
@click.argument("name")
@env_option
def create(name: str, environment: str | None) -> None:
    """Create an empty volume.

    \b
    Example:
      ketch volume create weights
    """
    from ketch._client.volume_api import call
    from ketch._utils.aio import run_sync
    from ketch._utils.labels import validate_name

    validate_name("volume", name)
    run_sync(
        call("POST", "/v1/volumes", json={"name": name, "environment": _environment(environment)})
    )
    click.echo(f"Created volume {name!r}.")


@volume.command("list")
@env_option
@json_option
def list_volumes(environment: str | None, as_json: bool) -> None:
    """List named volumes.

    \b
    Example:
      ketch volume list --json
    """
    from ketch._client.volume_api import call
    from ketch._utils.aio import run_sync

    rows = run_sync(call("GET", "/v1/volumes", params={"environment": _environment(environment)}))
    if as_json:
        echo_json(rows)
        return
    for r in rows:
        click.echo(f"{r['name']}\t{r['volume_id']}\t{clock(r['created'])}")


@volume.command()
@click.argument("name")
@click.argument("path", default="/")
@env_option
@click.option("-r", "--recursive", is_flag=True, help="List everything below PATH.")
@json_option
def ls(name: str, path: str, environment: str | None, recursive: bool, as_json: bool) -> None:
    """List files in a volume (directories end with '/').

    \b
    Example:
      ketch volume ls weights /models -r
    """
    from ketch.volume import FileEntryType, Volume

    vol = _volume(name, environment)
    assert isinstance(vol, Volume)
    entries = vol.listdir(path, recursive=recursive)
    if as_json:
        echo_json(
            [
                {"path": e.path, "type": e.type.name.lower(), "size": e.size, "mtime": e.mtime}
                for e in entries
            ]
        )
        return
    for e in entries:
        mark = "/" if e.type == FileEntryType.DIRECTORY else ""
        click.echo(f"{e.size:>12}  {clock(e.mtime)}  {e.path}{mark}")


@volume.command()
@click.argument("name")
@click.argument("local", type=click.Path(exists=True))
@click.argument("remote", default="/")
@env_option
@click.option("-f", "--force", is_flag=True, help="Replace files that already exist.")
def put(name: str, local: str, remote: str, environment: str | None, force: bool) -> None:
    """Upload a local file or directory. A REMOTE ending in '/' (the default, '/') is a
    directory to put it in.

    \b
    Example:
      ketch volume put weights ./model.bin /models/model.bin
    """
    from ketch.volume import Volume

    vol = _volume(name, environment)
    assert isinstance(vol, Volume)
    src = Path(local)
    with vol.batch_upload(force=force) as batch:
        if src.is_dir():
            batch.put_directory(src, remote)
        else:
            target = remote
            if remote.endswith("/"):
                target = str(PurePosixPath(remote) / src.name)
            batch.put_file(src, target)
    click.echo(f"Uploaded {local} to {name}:{remote}")


@volume.command()
@click.argument("name")
@click.argument("remote")
@click.argument("local", default=".")
@env_option
@click.option("-f", "--force", is_flag=True, help="Overwrite local files.")
def get(name: str, remote: str, local: str, environment: str | None, force: bool) -> None:
    """Download a file (or a directory, recursively). LOCAL '-' writes a file to stdout;
    an existing local directory receives it under its own name.

    \b
    Example:
      ketch volume get weights /models/model.bin ./model.bin
    """
    from ketch.volume import FileEntryType, Volume

    vol = _volume(name, environment)
    assert isinstance(vol, Volume)
    top = vol.listdir(remote)  # FileNotFoundError for a missing path
    norm = PurePosixPath(remote.strip("/")).as_posix() if remote.strip("/") else ""
    is_file = len(top) == 1 and top[0].type == FileEntryType.FILE and top[0].path == norm
    if local == "-":
        if not is_file:
            raise click.UsageError("only a single file can be written to stdout")
        for chunk in vol.read_file(remote):
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    dest = Path(local)
    base = PurePosixPath(remote.strip("/") or ".")
    if dest.is_dir():
        dest = dest / (base.name or name)
    if is_file:
        files = [(remote, dest)]
    else:
        entries = vol.listdir(remote, recursive=True)
        files = [
            (e.path, dest / PurePosixPath(e.path).relative_to(base))
            for e in entries
            if e.type == FileEntryType.FILE
        ]
        dest.mkdir(parents=True, exist_ok=True)
    for src, target in files:
        if target.exists() and not force:
            raise click.ClickException(f"{target} exists; pass --force to overwrite it")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            with tmp.open("wb") as fh:
                vol.read_file_into_fileobj(src, fh)
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
    click.echo(f"Downloaded {name}:{remote} to {dest}")


@volume.command()
@click.argument("name")
@click.argument("path")
@env_option
@click.option("-r", "--recursive", is_flag=True, help="Remove a directory and its contents.")
def rm(name: str, path: str, environment: str | None, recursive: bool) -> None:
    """Remove a file (or, with -r, a directory) from a volume.

    \b
    Example:
      ketch volume rm weights /models -r
    """
    from ketch.volume import Volume

    vol = _volume(name, environment)
    assert isinstance(vol, Volume)
    vol.remove_file(path, recursive=recursive)
    click.echo(f"Removed {name}:{path}")


@volume.command()
@click.argument("name")
@env_option
@yes_option
def delete(name: str, environment: str | None, yes: bool) -> None:
    """Delete a volume and every file in it.

    \b
    Example:
      ketch volume delete weights -y
    """
    from ketch.volume import Volume

    _volume(name, environment)  # unknown names fail before the question
    if not yes:
        click.confirm(f"Delete volume {name!r} and all its files?", abort=True)
    Volume.delete(name, environment_name=_environment(environment))
    click.echo(f"Deleted volume {name!r}.")
