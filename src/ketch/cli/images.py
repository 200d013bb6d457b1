"""`ketch image list | rm | prune`: built images, their size on disk and their users."""

from __future__ import annotations

from typing import Any

import click

from ketch.cli import cli
from ketch.cli.output import api, clock, console, echo_json, json_option


def size(n: int) -> str:
    """Bytes for people: 812 B, 3.4 MB, 1.2 GB (powers of 1000, as `du --si`)."""
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def _users(row: dict[str, Any]) -> str:
    names = []
    for u in row["used_by"]:
        env = "" if u["environment"] == "main" else f" ({u['environment']})"
        names.append(f"{u['app']}::{u['function']}{env}")
    return ", ".join(names) or "-"


@cli.group()
def image() -> None:
    """Built images: list them with their sizes and users, remove them, prune unused ones.

    \b
    Example:
      ketch image list
      ketch image rm 3f2a9c
      ketch image prune --dry-run
    """


@image.command("list")
@json_option
def list_images(as_json: bool) -> None:
    """List built images: kind (venv or root filesystem), size on disk, who uses them.

    A root-filesystem image's size counts all its layers; SHARED is the part of it other
    images use too, and the total counts each layer once.

    \b
    Example:
      ketch image list --json
    """
    data = api("GET", "/v1/images")
    if as_json:
        echo_json(data)
        return
    from rich.table import Table

    table = Table("HASH", "KIND", "SIZE", "SHARED", "CREATED", "USED BY")
    table.columns[0].no_wrap = True
    for r in data["images"]:
        kind = r["kind"] if r["kind"] == "venv" else f"rootfs ({r['layers']} layers)"
        if r["kind"] == "venv" and r.get("python_version"):
            kind = f"venv (Python {r['python_version']})"
        shared = size(r["shared"]) if r["shared"] else "-"
        table.add_row(r["hash"][:12], kind, size(r["size"]), shared, clock(r["created"]), _users(r))
    out = console()
    out.print(table)
    note = (
        f"; {data['shared_layers']} layer(s) shared between images, counted once"
        if data["shared_layers"]
        else ""
    )
    out.print(f"{len(data['images'])} image(s), {size(data['total'])} on disk{note}.")


@image.command("rm")
@click.argument("prefix")
@click.option("--force", is_flag=True, help="Remove it even if a deployed function uses it.")
def remove(prefix: str, force: bool) -> None:
    """Remove an image (by a prefix of its hash) and the layers only it uses.

    A function still using it has it built again on its next deploy or server start.

    \b
    Example:
      ketch image rm 3f2a9c
    """
    out = api("DELETE", f"/v1/images/{prefix}", params={"force": str(force).lower()})
    gone = out["images"][0]
    layers = f" and {len(out['layers'])} layer(s)" if out["layers"] else ""
    click.echo(f"Removed {gone['kind']} image {gone['hash'][:12]}{layers}: {size(out['freed'])}.")


@image.command()
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option(
    "--bases",
    is_flag=True,
    help="Remove unused bases too (the Debian base, pulled registry images).",
)
@json_option
def prune(dry_run: bool, bases: bool, as_json: bool) -> None:
    """Remove every image and root-filesystem layer no deployed or running app uses.

    \b
    Example:
      ketch image prune --dry-run
    """
    params = {"dry_run": str(dry_run).lower(), "bases": str(bases).lower()}
    out = api("POST", "/v1/images/prune", params=params)
    if as_json:
        echo_json(out)
        return
    verb = "Would free" if dry_run else "Freed"
    done = "would remove" if dry_run else "removed"
    for img in out["images"]:
        click.echo(f"  {done} {img['kind']} image {img['hash'][:12]}")
    for unit in out["layers"]:
        click.echo(f"  {done} {unit}")
    click.echo(
        f"{verb} {size(out['freed'])}: {len(out['images'])} image(s), "
        f"{len(out['layers'])} layer(s), {out['leftovers']} leftover build(s)."
    )
    if out.get("unrecorded_kept"):
        click.echo(
            f"Kept {out['unrecorded_kept']} layer(s) no image of this server names: the layer "
            "cache (KETCH_ROOTFS_CACHE) may be shared with other servers."
        )
