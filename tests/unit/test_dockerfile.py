"""The Dockerfile parser: typed instructions, Docker's substitution rules, refusals by name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ketch._images.dockerfile import (
    Arg,
    Cmd,
    Copy,
    Entrypoint,
    Env,
    From,
    Instruction,
    Run,
    Shell,
    User,
    Workdir,
    parse,
)
from ketch.exception import InvalidError

pytestmark = pytest.mark.spec("I1")


def one(text: str, **kwargs: object) -> Instruction:
    parsed = parse(text, **kwargs)  # type: ignore[arg-type]
    assert len(parsed) == 1, parsed
    return parsed[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("FROM debian:bookworm", From(image="debian:bookworm")),
        ("from debian:12 AS build", From(image="debian:12", alias="build")),
        ("RUN apt-get update", Run(command="apt-get update")),
        ('RUN ["echo", "a b"]', Run(argv=("echo", "a b"))),
        ("RUN [not json", Run(command="[not json")),  # Docker runs it as a shell command
        ("COPY a.txt /dst/", Copy(sources=("a.txt",), dest="/dst/")),
        ('COPY ["a b.txt", "c", "/d/"]', Copy(sources=("a b.txt", "c"), dest="/d/")),
        (
            "COPY --chown=app:app --chmod=755 a /b",
            Copy(sources=("a",), dest="/b", chown="app:app", chmod="755"),
        ),
        ("ADD x.tar.gz /opt/", Copy(sources=("x.tar.gz",), dest="/opt/", add=True)),
        ("ENV A=1", Env(vars=(("A", "1"),))),
        ("ENV A=1 B=2", Env(vars=(("A", "1"), ("B", "2")))),
        ("ENV NAME John Doe", Env(vars=(("NAME", "John Doe"),))),
        ('ENV A="x y" B=c\\ d', Env(vars=(("A", "x y"), ("B", "c d")))),
        ("WORKDIR /app", Workdir(path="/app")),
        ("ARG V", Arg(name="V")),
        ("ARG V=1.0", Arg(name="V", value="1.0")),
        ("USER nobody:nogroup", User(user="nobody:nogroup")),
        (
            'SHELL ["/bin/bash", "-o", "pipefail", "-c"]',
            Shell(argv=("/bin/bash", "-o", "pipefail", "-c")),
        ),
        ('ENTRYPOINT ["python3"]', Entrypoint(argv=("python3",))),
        ("CMD python3 -V", Cmd(command="python3 -V")),
    ],
)
def test_instructions_parse_to_typed_steps(text: str, expected: Instruction) -> None:
    got = one(text)
    assert got == expected
    assert got.line == 1 and got.text == text


def test_arg_defaults_and_env_substitute_in_later_instructions() -> None:
    parsed = parse(
        "\n".join(
            [
                "ARG VERSION=1.2",
                "ARG EMPTY",
                "ENV APP=/srv/app-$VERSION",
                "WORKDIR ${APP}/x",
                "COPY ${MISSING:-fallback}.txt ${EMPTY:+never}/dst/",
                "USER ${VERSION:+app}",
                "ENV OLD=$APP NEW=${APP}2",
                "RUN echo $VERSION",
            ]
        )
    )
    assert parsed[2] == Env(vars=(("APP", "/srv/app-1.2"),))
    assert parsed[3] == Workdir(path="/srv/app-1.2/x")
    assert parsed[4] == Copy(sources=("fallback.txt",), dest="/dst/")
    assert parsed[5] == User(user="app")
    assert parsed[6] == Env(vars=(("OLD", "/srv/app-1.2"), ("NEW", "/srv/app-1.22")))
    # RUN is left to the shell, which sees ARG and ENV values as variables.
    assert parsed[7] == Run(command="echo $VERSION")


def test_env_in_one_instruction_sees_values_from_before_it() -> None:
    parsed = parse("ENV A=old\nENV A=new B=$A")
    assert parsed[1] == Env(vars=(("A", "new"), ("B", "old")))


def test_build_args_override_defaults_and_env_shadows_arg() -> None:
    parsed = parse("ARG V=1\nENV V=env\nWORKDIR /$V", build_args={"V": "2"})
    assert parsed[0] == Arg(name="V", value="2")
    assert parsed[2] == Workdir(path="/env")


def test_earlier_environment_is_visible() -> None:
    assert one("WORKDIR $HOME/app", env={"HOME": "/root"}) == Workdir(path="/root/app")


def test_single_quotes_and_escapes_stop_substitution() -> None:
    parsed = parse('ARG X=1\nENV A=\'$X\' B=\\$X C="\\$X" D="$X"')
    assert parsed[1] == Env(vars=(("A", "$X"), ("B", "$X"), ("C", "$X"), ("D", "1")))


def test_global_arg_is_only_for_from_unless_declared_again() -> None:
    parsed = parse("ARG TAG=bookworm\nFROM debian:$TAG\nWORKDIR /$TAG\nARG TAG\nUSER $TAG")
    assert parsed[1] == From(image="debian:bookworm")
    assert parsed[2] == Workdir(path="/")
    assert parsed[3] == Arg(name="TAG", value="bookworm")
    assert parsed[4] == User(user="bookworm")


def test_continuations_comments_and_line_numbers() -> None:
    text = "\n".join(
        [
            "# syntax=docker/dockerfile:1",
            "",
            "# a comment",
            "RUN apt-get update && \\",
            "    # a comment inside a continuation is dropped",
            "",
            "    apt-get install -y jq",
            "  env A=1",
        ]
    )
    run, env = parse(text)
    assert run == Run(command="apt-get update &&     apt-get install -y jq")
    assert run.line == 4
    assert env == Env(vars=(("A", "1"),)) and env.line == 8
    assert "line 4" in run.describe()


@pytest.mark.parametrize(
    "keyword", ["HEALTHCHECK", "EXPOSE", "LABEL", "VOLUME", "ONBUILD", "STOPSIGNAL", "MAINTAINER"]
)
def test_other_instructions_are_refused_by_name_and_line(keyword: str) -> None:
    with pytest.raises(InvalidError, match=rf"Dockerfile line 3: {keyword} is not supported"):
        parse(f"FROM debian:bookworm\nRUN true\n{keyword.lower()} something")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ADD https://example.com/x.tgz /x", "from a URL"),
        ("COPY --from=build /a /b", "multi-stage builds"),
        ("RUN --mount=type=cache,target=/x true", "build mounts"),
        ("COPY --link a /b", "COPY flag --link is not supported"),
        ("FROM --platform=arm64 debian:bookworm", "this machine's platform"),
        ("RUN <<EOF\necho hi\nEOF", "here-document"),
        ("FROM debian:bookworm\nFROM debian:bookworm", "multi-stage builds"),
        ("RUN true\nFROM debian:bookworm", "FROM must come first"),
        ("SHELL /bin/bash -c", "JSON form"),
        ("ENV A", "needs a value"),
        ("ENV A=1 B", "NAME=value pairs"),
        ("WORKDIR a b", "exactly one argument"),
        ("COPY a", "one source and a destination"),
        ("COPY --chmod=u+x a /b", "octal mode"),
        ('ENV A="unterminated', "unterminated"),
        ("WORKDIR ${A", "unterminated"),
        ("WORKDIR ${A?err}", "bad variable reference"),
        ("# escape=`\nRUN true", "escape="),
        ("RUN", "needs arguments"),
    ],
)
def test_refusals_say_what_and_where(text: str, message: str) -> None:
    with pytest.raises(InvalidError, match="line") as info:
        parse(text)
    assert message in str(info.value)


_word = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r"),
    min_size=1,
    max_size=12,
)
_name = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
_path = st.lists(st.from_regex(r"[a-z0-9._-]{1,6}", fullmatch=True), min_size=1, max_size=3).map(
    lambda parts: "/" + "/".join(parts)
)
_instruction = st.one_of(
    st.builds(
        lambda v: Env(vars=tuple(v.items())),
        st.dictionaries(
            _name,
            st.text(
                st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\n\r"),
                max_size=12,
            ),
            min_size=1,
            max_size=3,
        ),
    ),
    st.builds(lambda p: Workdir(path=p), _word.filter(lambda w: w.strip() == w)),
    st.builds(lambda u: User(user=u), _word),
    st.builds(lambda a: Run(argv=tuple(a)), st.lists(_word, min_size=1, max_size=3)),
    st.builds(lambda a: Cmd(argv=tuple(a)), st.lists(_word, min_size=1, max_size=3)),
    st.builds(lambda a: Shell(argv=tuple(a)), st.lists(_word, min_size=1, max_size=3)),
    st.builds(
        lambda srcs, dest, chmod: Copy(sources=tuple(srcs), dest=dest + "/", chmod=chmod),
        st.lists(_word.filter(lambda w: "://" not in w), min_size=1, max_size=3),
        _path,
        st.none() | st.sampled_from(["644", "0755"]),
    ),
    st.builds(lambda n, v: Arg(name=n, value=v), _name, st.none() | _word),
)


@given(st.lists(_instruction, min_size=1, max_size=6))
def test_rendered_instructions_parse_back_equal(instructions: list[Instruction]) -> None:
    text = "\n".join(i.render() for i in instructions)
    assert parse(text) == instructions
