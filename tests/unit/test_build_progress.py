"""What a deploy shows of its image builds on a terminal (rich, one line per layer) and
elsewhere (the plain log lines, which scripts read)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from ketch.cli.output import DeployProgress

pytestmark = pytest.mark.spec("C6")

BUILD = [
    "image for f: checking",
    "==> rootfs image: Debian bookworm base (apt, python3), 2 layer(s) on top",
    "==> [base] Debian bookworm base (apt, python3) (cached)",
    "==> [1/2] RUN apt-get install -y jq (apt_install) (cached)",
    "==> [2/2] RUN echo built > /opt/marker (run_commands)",
    "writing the marker",
]


def terminal() -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, force_terminal=True, width=160, color_system=None), buf


def test_terminal_shows_a_line_per_layer_with_cached_ones_marked() -> None:
    out, buf = terminal()
    with DeployProgress("deploying app", live=True, out=out) as show:
        for line in BUILD:
            show(line)
    text = buf.getvalue()
    final = text[text.rfind("deploying app: done") - 2000 :]
    cached = [ln for ln in final.splitlines() if "(apt_install)" in ln]
    assert cached and "cached" in cached[-1]
    run = [ln for ln in final.splitlines() if "[2/2] RUN echo built" in ln]
    assert run and "cached" not in run[-1]
    assert "image for f: ready (1 step run)" in final
    assert "[base] Debian bookworm base" in final
    assert "==> " not in text  # the plain lines are not printed as well


def test_failed_step_is_marked_failed_on_the_terminal() -> None:
    out, buf = terminal()
    with pytest.raises(RuntimeError), DeployProgress("deploying app", live=True, out=out) as show:
        for line in BUILD:
            show(line)
        raise RuntimeError("image build failed at step RUN echo built")
    last = [ln for ln in buf.getvalue().splitlines() if "[2/2] RUN echo built" in ln][-1]
    assert "failed" in last


def test_elsewhere_the_plain_lines_are_printed(capsys: pytest.CaptureFixture[str]) -> None:
    with DeployProgress("deploying app", live=False) as show:
        for line in BUILD:
            show(line)
    assert capsys.readouterr().err.splitlines() == [f"  {line}" for line in BUILD]
