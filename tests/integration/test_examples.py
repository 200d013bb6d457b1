"""Every file in examples/ runs with `ketch run` and prints what it promises."""

from __future__ import annotations

import re

import pytest
from cli_support import EXAMPLES, ketch, ok, python

# file -> (extra CLI args, lines (regular expressions) the output must contain)
EXPECTED: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "hello.py": (
        (),
        [
            r"^square of 7 is 49$",
            r"^squares: \[0, 1, 4, 9, 16\]$",
            r"^\[square ta-\w+\] squaring 7$",
        ],
    ),
    "spawn_poll.py": (("--a", "20", "--b", "22"), [r"^spawned fc-\w+$", r"^result 42$"]),
    "generators.py": (("--n", "3"), [r"^got 3\ngot 2\ngot 1\nliftoff$"]),
    "classes.py": (("--name", "Ada"), [r"^Hello, Ada!$", r"^Bonjour, Ada!$"]),
    "secrets_env.py": ((), [r"^user=demo-user target=world$", r"^set locally: False$"]),
    "images.py": ((), [r"^six \d+\.\d+\.\d+ \(DEMO_MODE=images\)$"]),
    "modal_script.py": (
        ("--x", "2"),
        [r"^cube: 8$", r"^spawned cube: 27$", r"^lookup: NotFoundError, as on Modal$"],
    ),
    # Web examples: `ketch run` prints the URLs, the entrypoint calls them over HTTP.
    "web.py": (
        ("--x", "42"),
        [
            r"^Web endpoints:$",
            r"^  square\s+http://127\.0\.0\.1:\d+$",
            r'^hello: "Hello world!"$',
            r'^square: \{"square":1764\}$',
            r'^square_post: \{"square":1764\}$',
            r"^greet: <html>Hello, Erik! \(10\)</html>$",
            r'^get_ip: "Your IP address is 127\.0\.0\.1"$',
            r"^show_url is its own URL: True$",
            r"^show_url serves docs: 200$",
        ],
    ),
    "web_apps.py": (
        (),
        [
            r'^fastapi /: \{"message":"Hello"\}$',
            r'^fastapi /echo: \{"from":"asgi"\}$',
            r'^flask /echo: \{"from":"wsgi"\}$',
            r"\] Starting$",
        ],
    ),
    "web_streaming.py": (
        (),
        [
            r"^stream_me \+[\d.]+s: data: some data 0\n(stream_me .*\n){3}"
            r"stream_me \+[\d.]+s: data: some data 4$",
            r"^hook \+[\d.]+s: data: finished processing part 2$",
            r"^mapped \+[\d.]+s: segment 0\n(mapped .*\n){2}mapped \+[\d.]+s: segment 3$",
            r"^transcribe \+[\d.]+s: data: segment 2$",
        ],
    ),
    "web_auth.py": (
        (),
        [
            r"^protected, no token: 401 ketch:",
            r"^protected, with a token: 200 "
            r'"authenticated!"$',
            r"^protected, token revoked: 401 ketch:",
            r"^bearer, wrong token: 401 ",
            r'^bearer, right token: 200 "success!"$',
        ],
    ),
    "web_polling.py": (
        ("--seconds", "1"),
        [r"^accepted fc-\w+$", r"^result slept 1s after [1-9]\d* polls of 202$"],
    ),
    "web_server.py": ((), [r"^my_file_server: Directory listing for /$"]),
    "web_domains.py": (
        (),
        [
            r'^api\.example\.com: \{"message":"hello world"\}$',
            r'^api\.example\.net: \{"message":"hello world"\}$',
            r'^7\.wild\.example\.org: \{"message":"wildcard world"\}$',
        ],
    ),
    # Unanchored: container log lines may land between a print and its newline.
    "web_class.py": (
        (),
        [r"root=\.: 200, lists etc/: False", r"root\?root=%2F: 200, lists etc/: True"],
    ),
}


def test_every_example_is_covered() -> None:
    files = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert files == sorted(EXPECTED), "add new examples to EXPECTED in this file"


# Examples that are also the proof of a behaviour (the seed's own pattern, end to end).
SPECS = {
    "web_domains.py": "W8",
    "web_polling.py": "W18",
    "web_streaming.py": "W10",
    "web_class.py": "S6",
    "web_apps.py": "W2",
    "web_server.py": "W4",
}


@pytest.mark.spec("A7")
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[pytest.mark.spec(SPECS[n])] if n in SPECS else [])
        for n in sorted(EXPECTED)
    ],
)
def test_example_runs(server, name: str) -> None:
    args, patterns = EXPECTED[name]
    out = ok(ketch(server.home, "run", str(EXAMPLES / name), *args))
    for pattern in patterns:
        assert re.search(pattern, out, re.M), f"{pattern!r} not in:\n{out}"


@pytest.mark.spec("C7")
def test_modal_example_deploys(server) -> None:
    ok(ketch(server.home, "deploy", str(EXAMPLES / "modal_script.py")))
    out = ok(
        python(
            server.home,
            """
        import ketch
        print(ketch.Function.from_name("modal-script", "cube").remote(4))
    """,
        )
    )
    assert out.strip() == "64"
