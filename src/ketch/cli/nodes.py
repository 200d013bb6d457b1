"""`ketch node list`."""

from __future__ import annotations

from ketch.cli import cli
from ketch.cli.output import api, json_option, print_rows


@cli.group()
def node() -> None:
    """Inspect the machines containers run on (one, or the nodes of a Ray cluster).

    \b
    Example:
      ketch node list
    """


@node.command("list")
@json_option
def list_nodes(as_json: bool) -> None:
    """List nodes: id, address, alive, CPUs, memory, GPUs by type, containers running.

    \b
    Example:
      ketch node list --json
    """
    print_rows(
        api("GET", "/v1/nodes"),
        as_json,
        ("node id", "address", "alive", "cpus", "memory", "gpus", "containers"),
        lambda r: [
            r["node_id"],
            r["address"],
            "yes" if r["alive"] else "no",
            f"{r['cpus']:g}",
            f"{r['memory_mb']} MiB",
            ", ".join(f"{n} x {t}" for t, n in sorted(r["gpus"].items())) or "-",
            str(r["containers"]),
        ],
    )
