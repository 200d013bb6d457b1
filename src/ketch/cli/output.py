"""What the commands print: tables, JSON, times, durations, and followed NDJSON streams;
and the --env, --json and --yes options many commands take."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click

ENV_HELP = "Environment (default: the configured one, usually main)."
env_option = click.option("--env", "environment", default=None, help=ENV_HELP)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
yes_option = click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
force_build_option = click.option(
    "--force-build",
    is_flag=True,
    help="Build images again, every layer, even when cached (env: KETCH_FORCE_BUILD=1 or "
    "MODAL_FORCE_BUILD=1).",
)


def request_force_build(force: bool) -> None:
    """Make this process's deploys build their images again (`--force-build`); the
    environment variable is how the SDK's deploy learns it, as MODAL_FORCE_BUILD does."""
    from ketch._client.deploy import FORCE_BUILD_VARS

    if force:
        os.environ[FORCE_BUILD_VARS[0]] = "1"


def console(stderr: bool = False) -> Any:
    """A rich console that writes plain text when not on a terminal or under NO_COLOR."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    plain = bool(os.environ.get("NO_COLOR")) or not stream.isatty()
    # Piped output is read by scripts and people alike: wide enough that no cell wraps.
    return Console(
        file=stream,
        no_color=plain,
        highlight=False,
        emoji=False,
        force_terminal=False if plain else None,
        width=None if stream.isatty() else 200,
    )


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data))


def print_rows(
    rows: list[dict[str, Any]],
    as_json: bool,
    columns: tuple[str, ...],
    cells: Callable[[dict[str, Any]], list[str]],
    *,
    no_wrap: int = 1,
) -> None:
    """Rows as one JSON list (--json), else as a table of `cells(row)` under `columns`.
    The first `no_wrap` columns are never cut: ids and names get copied into other
    commands."""
    if as_json:
        echo_json(rows)
        return
    from rich.table import Table

    table = Table(*columns)
    for col in table.columns[:no_wrap]:
        col.no_wrap = True
    for r in rows:
        table.add_row(*cells(r))
    console().print(table)


def clock(ts: float | None, *, date: bool = True) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S" if date else "%H:%M:%S", time.localtime(ts))


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def parse_duration(text: str, param: str = "--since") -> float:
    """`30s`, `10m`, `2h`, `1d` or a number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        value = float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)
    except (ValueError, IndexError):
        value = -1.0
    if value < 0:
        raise click.BadParameter(
            f"{text!r} is not a duration like 30s, 10m, 2h or 1d", param_hint=param
        )
    return value


def print_entry(entry: dict[str, Any], as_json: bool) -> None:
    """One stored or live log entry: `HH:MM:SS [function container] line`."""
    if as_json:
        echo_json({k: v for k, v in entry.items() if k != "t"})
        return
    mark = "ketch: " if entry["stream"] == "system" else ""
    click.echo(
        f"{clock(entry['ts'], date=False)} [{entry['function']} {entry['container']}] "
        f"{mark}{entry['line']}"
    )


def api(method: str, path: str, **kwargs: Any) -> Any:
    from ketch._client.deploy import ApiClient
    from ketch._utils.aio import run_sync

    return run_sync(ApiClient().call(method, path, **kwargs))


def follow(path: str, params: dict[str, Any], on_item: Callable[[dict[str, Any]], None]) -> None:
    """Read an NDJSON stream of the management API until the server ends it (or Ctrl-C)."""
    from ketch._client.deploy import ApiClient, json_or_raise
    from ketch._utils.aio import run_sync

    async def go() -> None:
        async with (
            await ApiClient()._http() as http,
            http.stream("GET", path, params={**params, "follow": "true"}) as resp,
        ):
            if resp.status_code != 200:
                await resp.aread()
                json_or_raise(resp)
            async for line in resp.aiter_lines():
                if line.strip():
                    on_item(json.loads(line))

    run_sync(go())


class DeployProgress:
    """Shows a deploy's log stream: on a terminal, a live line per image being checked or
    built and under it one per layer (its step, `cached` when it was, the latest output
    while it runs); elsewhere, the plain lines. A failing build's instruction and last
    lines come with its error either way (see ImageBuildError)."""

    def __init__(
        self, what: str, *, quiet: bool = False, live: bool | None = None, out: Any = None
    ) -> None:
        self.what = what
        self.quiet = quiet
        if live is None:
            live = sys.stderr.isatty() and not os.environ.get("NO_COLOR")
        self.live = not quiet and live
        self._out = out  # a rich Console; the terminal's stderr unless given
        self._progress: Any = None
        self._images: dict[str, Any] = {}
        self._current: str | None = None
        self._step: Any = None  # the progress task of the layer being built
        self._built: dict[str, int] = {}

    def __enter__(self) -> DeployProgress:
        if self.live:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._progress = Progress(
                SpinnerColumn(finished_text=" "),
                # Steps and their output are shown as they are: `[base]` is not markup.
                TextColumn("{task.description}", markup=False),
                TextColumn("{task.fields[detail]}", style="dim", markup=False),
                TimeElapsedColumn(),
                console=self._out or console(stderr=True),
                transient=False,
            )
            self._progress.start()
            self._deploy = self._progress.add_task(self.what, total=1, detail="")
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if self._progress is None:
            return
        if kind is None:
            self._end_step("")
            for tag, task in self._images.items():
                n = self._built.get(tag, 0)
                done = f" ({n} step{'s' if n != 1 else ''} run)" if n else ""
                self._progress.update(
                    task, completed=1, description=f"image for {tag}: ready{done}", detail=""
                )
            self._progress.update(self._deploy, completed=1, description=f"{self.what}: done")
        else:
            # The error itself (instruction and log tail) is printed after this.
            self._end_step("failed")
        self._progress.stop()

    def _end_step(self, mark: str) -> None:
        if self._step is not None:
            self._progress.update(self._step, completed=1, detail=mark)
            self._step = None

    def __call__(self, line: str) -> None:
        if self.quiet:
            return
        if self._progress is None:
            click.echo(f"  {line}", err=True)
            return
        if line.startswith("image for ") and line.endswith(": checking"):
            self._end_step("")
            self._current = line[len("image for ") : -len(": checking")]
            self._images[self._current] = self._progress.add_task(
                f"{line[: -len(': checking')]}: checking", total=1, detail=""
            )
            return
        tag = self._current
        if tag is None or tag not in self._images:
            return
        if line.startswith("==> rootfs image: ") or line.startswith("==> venv image "):
            kind = "root filesystem" if line.startswith("==> rootfs") else "venv"
            self._progress.update(self._images[tag], description=f"image for {tag}: {kind}")
        elif line.startswith("==> "):
            self._end_step("")
            step = line[4:]
            cached = step.endswith(" (cached)")
            text = step.removesuffix(" (cached)")
            text = text if len(text) <= 100 else text[:97] + "..."
            task = self._progress.add_task(f"  {text}", total=1, detail="")
            if cached:
                self._progress.update(task, completed=1, detail="cached")
            else:
                self._step = task
                self._built[tag] = self._built.get(tag, 0) + 1
        elif self._step is not None and line.strip():
            self._progress.update(self._step, detail=line.strip()[:60])
