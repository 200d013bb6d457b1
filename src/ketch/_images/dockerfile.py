"""Dockerfile text as typed instructions: the language the root-filesystem builder runs.

Pure: no files are read and nothing runs. Variable substitution follows Docker's rules
(`$X`, `${X}`, `${X:-word}`, `${X:+word}`; ARG and ENV values; single quotes and `\\$`
suppress it) in the instructions where Docker applies it: FROM, COPY, ADD, ENV, WORKDIR,
ARG and USER. RUN, CMD and ENTRYPOINT are left to the shell that runs them, as in Docker.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ketch.exception import InvalidError

__all__ = [
    "Arg",
    "Cmd",
    "Copy",
    "Entrypoint",
    "Env",
    "From",
    "Instruction",
    "Run",
    "Shell",
    "User",
    "Workdir",
    "parse",
]

SUPPORTED = (
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "WORKDIR",
    "ARG",
    "USER",
    "SHELL",
    "ENTRYPOINT",
    "CMD",
)

_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEREDOC_RE = re.compile(r"<<-?\s*[\"']?[A-Za-z_]")
_KEYWORD_RE = re.compile(r"\s*([A-Za-z]+)(?:\s+(.*))?\s*$", re.DOTALL)
_DIRECTIVE_RE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(\S*)\s*$")
_FLAG_RE = re.compile(r"--([a-z-]+)(?:=(.*))?$")


@dataclass(frozen=True, kw_only=True)
class Instruction(abc.ABC):
    """One Dockerfile instruction. `line` and `text` say where it came from, for messages;
    they take no part in equality, so an instruction equals its re-parsed rendering."""

    line: int = field(default=0, compare=False)
    text: str = field(default="", compare=False)

    @property
    def keyword(self) -> str:
        return type(self).__name__.upper()

    def to_dict(self) -> dict[str, Any]:
        """The instruction's meaning as JSON-able data (what layer hashes are made of)."""
        data = {k: v for k, v in asdict(self).items() if k not in ("line", "text")}
        return {"instruction": self.keyword, **data}

    @abc.abstractmethod
    def render(self) -> str:
        """Dockerfile text that parses back to an equal instruction."""

    def describe(self) -> str:
        shown = self.text or self.render()
        if len(shown) > 160:
            shown = shown[:157] + "..."
        return f"{shown} (line {self.line})" if self.line else shown


def _exec_or_shell(argv: tuple[str, ...] | None, command: str | None) -> str:
    return json.dumps(list(argv)) if argv is not None else command or ""


@dataclass(frozen=True, kw_only=True)
class From(Instruction):
    image: str
    alias: str | None = None

    def render(self) -> str:
        alias = f" AS {self.alias}" if self.alias else ""
        return f"FROM {_quote(self.image)}{alias}"


@dataclass(frozen=True, kw_only=True)
class Run(Instruction):
    """`command` for the shell form (run by SHELL), `argv` for the JSON (exec) form."""

    command: str | None = None
    argv: tuple[str, ...] | None = None

    def render(self) -> str:
        return f"RUN {_exec_or_shell(self.argv, self.command)}"


@dataclass(frozen=True, kw_only=True)
class Copy(Instruction):
    """COPY, or ADD (`add`): local sources (relative to the build context) to `dest`."""

    sources: tuple[str, ...]
    dest: str
    chown: str | None = None
    chmod: str | None = None
    add: bool = False

    @property
    def keyword(self) -> str:
        return "ADD" if self.add else "COPY"

    def render(self) -> str:
        flags = ""
        if self.chown is not None:
            flags += f" --chown={self.chown}"
        if self.chmod is not None:
            flags += f" --chmod={self.chmod}"
        words = " ".join(_quote(w) for w in (*self.sources, self.dest))
        return f"{self.keyword}{flags} {words}"


@dataclass(frozen=True, kw_only=True)
class Env(Instruction):
    vars: tuple[tuple[str, str], ...]

    def render(self) -> str:
        return "ENV " + " ".join(f"{k}={_quote(v)}" for k, v in self.vars)


@dataclass(frozen=True, kw_only=True)
class Workdir(Instruction):
    path: str

    def render(self) -> str:
        return f"WORKDIR {_quote(self.path)}"


@dataclass(frozen=True, kw_only=True)
class Arg(Instruction):
    """A build argument; `value` is already resolved (build arg, else default, else None)."""

    name: str
    value: str | None = None

    def render(self) -> str:
        return f"ARG {self.name}" + ("" if self.value is None else f"={_quote(self.value)}")


@dataclass(frozen=True, kw_only=True)
class User(Instruction):
    user: str

    def render(self) -> str:
        return f"USER {_quote(self.user)}"


@dataclass(frozen=True, kw_only=True)
class Shell(Instruction):
    argv: tuple[str, ...]

    def render(self) -> str:
        return f"SHELL {json.dumps(list(self.argv))}"


@dataclass(frozen=True, kw_only=True)
class Entrypoint(Instruction):
    command: str | None = None
    argv: tuple[str, ...] | None = None

    def render(self) -> str:
        return f"ENTRYPOINT {_exec_or_shell(self.argv, self.command)}"


@dataclass(frozen=True, kw_only=True)
class Cmd(Instruction):
    command: str | None = None
    argv: tuple[str, ...] | None = None

    def render(self) -> str:
        return f"CMD {_exec_or_shell(self.argv, self.command)}"


def _quote(word: str) -> str:
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    return f'"{escaped}"'


# -- lexing ----------------------------------------------------------------------------


class _Refusal(Exception):
    """A problem in one instruction; `parse` adds where it is."""


def _logical_lines(text: str, where: str) -> list[tuple[int, str]]:
    """Join continuation lines and drop comments, giving (first line number, text)."""
    out: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    in_directives = True
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if in_directives:
            directive = _DIRECTIVE_RE.match(stripped)
            if directive and directive.group(1).lower() == "escape":
                if directive.group(2) != "\\":
                    raise InvalidError(
                        f"{where} line {number}: the escape={directive.group(2)} parser "
                        "directive is not supported; ketch reads Dockerfiles with the "
                        "default escape character \\"
                    )
                continue
            if directive:
                continue  # `# syntax=` names a BuildKit frontend; there is nothing to select
            in_directives = False
        # Comment and empty lines are dropped even inside a continuation, as Docker does.
        if not stripped or stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if raw.rstrip().endswith("\\"):
            pending.append(raw.rstrip()[:-1])
            continue
        pending.append(raw)
        out.append((start, "".join(pending).strip()))
        pending = []
    if pending:
        out.append((start, "".join(pending).strip()))
    return out


def _lookup(name: str, vars: Mapping[str, str]) -> str | None:
    return vars.get(name)


def _expand_braced(body: str, vars: Mapping[str, str]) -> str:
    for op in (":-", ":+"):
        if op in body:
            name, word = body.split(op, 1)
            if not _NAME_RE.fullmatch(name):
                raise _Refusal(f"bad variable reference ${{{body}}}")
            value = _lookup(name, vars)
            word = _expand(word, vars)
            if op == ":-":
                return value if value else word
            return word if value else ""
    if not _NAME_RE.fullmatch(body):
        raise _Refusal(
            f"bad variable reference ${{{body}}} (supported: ${{X}}, ${{X:-w}}, ${{X:+w}})"
        )
    return _lookup(body, vars) or ""


def _dollar(s: str, i: int, vars: Mapping[str, str]) -> tuple[str, int]:
    """Expand the `$` reference at s[i]; return its value and the index after it."""
    if i + 1 < len(s) and s[i + 1] == "{":
        end = s.find("}", i + 2)
        if end < 0:
            raise _Refusal("unterminated ${ in a variable reference")
        return _expand_braced(s[i + 2 : end], vars), end + 1
    match = _NAME_RE.match(s, i + 1)
    if match is None:
        return "$", i + 1
    return _lookup(match.group(0), vars) or "", match.end()


def _expand(s: str, vars: Mapping[str, str]) -> str:
    """Substitute variables in `s` with no quote processing (`\\$` stays a literal `$`)."""
    out: list[str] = []
    i = 0
    while i < len(s):
        c = s[i]
        if c == "\\" and i + 1 < len(s) and s[i + 1] == "$":
            out.append("$")
            i += 2
        elif c == "$":
            value, i = _dollar(s, i, vars)
            out.append(value)
        else:
            out.append(c)
            i += 1
    return "".join(out)


def _words(s: str, vars: Mapping[str, str] | None) -> list[str]:
    """Split `s` into words as Docker does: quotes, backslash escapes, and (unless `vars`
    is None) variable substitution outside single quotes."""
    words: list[str] = []
    cur: list[str] = []
    started = False
    quote: str | None = None
    i = 0
    while i < len(s):
        c = s[i]
        if quote == "'":
            if c == "'":
                quote = None
            else:
                cur.append(c)
            i += 1
            continue
        if c == "\\" and i + 1 < len(s):
            nxt = s[i + 1]
            if quote == '"' and nxt not in '"\\$':
                cur.append(c)  # inside double quotes only these are escapes, as in sh
            else:
                cur.append(nxt)
                i += 1
            started = True
            i += 1
            continue
        if c == "$" and vars is not None:
            value, i = _dollar(s, i, vars)
            cur.append(value)
            started = True
            continue
        if quote == '"':
            if c == '"':
                quote = None
            else:
                cur.append(c)
            i += 1
            continue
        if c in "'\"":
            quote = c
            started = True
        elif c.isspace():
            if started:
                words.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(c)
            started = True
        i += 1
    if quote is not None:
        raise _Refusal(f"unterminated {quote} quote")
    if started:
        words.append("".join(cur))
    return words


def _json_form(rest: str) -> tuple[str, ...] | None:
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest)
    except ValueError:
        return None  # Docker runs a malformed JSON form as a shell command
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        return None
    return tuple(value)


def _flags(
    words: list[str], allowed: tuple[str, ...], keyword: str
) -> tuple[dict[str, str], list[str]]:
    flags: dict[str, str] = {}
    while words and words[0].startswith("--"):
        match = _FLAG_RE.match(words[0])
        name = match.group(1) if match else words[0]
        if match is None or name not in allowed or match.group(2) is None:
            why = {
                "from": "multi-stage builds are not supported",
                "mount": "build mounts are not supported",
                "platform": "images are built for this machine's platform only",
            }.get(name, f"supported flags: {', '.join('--' + a for a in allowed) or 'none'}")
            raise _Refusal(f"{keyword} flag --{name} is not supported ({why})")
        flags[name] = match.group(2)
        words = words[1:]
    return flags, words


# -- instructions ----------------------------------------------------------------------


class _Parser:
    def __init__(self, env: Mapping[str, str], build_args: Mapping[str, str]) -> None:
        self.env = dict(env)
        self.args: dict[str, str] = {}
        self.meta_args: dict[str, str] = {}
        self.build_args = dict(build_args)
        self.seen_from = False
        self.seen_other = False

    def vars(self) -> dict[str, str]:
        if not self.seen_from and not self.seen_other:
            return dict(self.meta_args)
        return {**self.args, **self.env}  # ENV shadows ARG, as in Docker

    def instruction(self, keyword: str, rest: str, line: int, text: str) -> Instruction:
        if keyword == "ARG":
            return self.arg(rest, line, text)
        if keyword == "FROM":
            return self.from_(rest, line, text)
        if not self.seen_from and not self.seen_other:
            # No FROM (dockerfile_commands extends an image): leading ARGs are ordinary ones.
            self.args.update(self.meta_args)
        self.seen_other = True
        if keyword in ("RUN", "COPY", "ADD") and not _json_form(rest) and _HEREDOC_RE.search(rest):
            raise _Refusal(f"{keyword} with a here-document (<<) is not supported")
        if keyword == "RUN":
            words = rest.split(None, 1)
            if words and words[0].startswith("--"):
                _flags(words[:1], (), "RUN")
            argv = _json_form(rest)
            if argv is not None:
                return Run(argv=argv, line=line, text=text)
            return Run(command=rest, line=line, text=text)
        if keyword in ("COPY", "ADD"):
            return self.copy(keyword, rest, line, text)
        if keyword == "ENV":
            return self.env_(rest, line, text)
        if keyword == "WORKDIR":
            return Workdir(path=self.single(keyword, rest), line=line, text=text)
        if keyword == "USER":
            return User(user=self.single(keyword, rest), line=line, text=text)
        if keyword == "SHELL":
            argv = _json_form(rest)
            if not argv:
                raise _Refusal('SHELL must be written in JSON form, e.g. SHELL ["/bin/bash", "-c"]')
            return Shell(argv=argv, line=line, text=text)
        argv = _json_form(rest)
        command = None if argv is not None else rest
        if keyword == "ENTRYPOINT":
            return Entrypoint(argv=argv, command=command, line=line, text=text)
        return Cmd(argv=argv, command=command, line=line, text=text)

    def single(self, keyword: str, rest: str) -> str:
        words = _words(rest, self.vars())
        if len(words) != 1 or not words[0]:
            raise _Refusal(f"{keyword} takes exactly one argument")
        return words[0]

    def from_(self, rest: str, line: int, text: str) -> From:
        if self.seen_from:
            raise _Refusal("a second FROM: multi-stage builds are not supported")
        if self.seen_other:
            raise _Refusal("FROM must come first (only ARG may come before it)")
        self.seen_from = True
        _, words = _flags(_words(rest, self.meta_args), (), "FROM")
        if len(words) == 3 and words[1].upper() == "AS":
            return From(image=words[0], alias=words[2], line=line, text=text)
        if len(words) != 1 or not words[0]:
            raise _Refusal("FROM takes an image reference, optionally followed by AS name")
        return From(image=words[0], line=line, text=text)

    def arg(self, rest: str, line: int, text: str) -> Arg:
        words = _words(rest, self.vars())
        if len(words) != 1:
            raise _Refusal("ARG takes one name, optionally with =default")
        name, eq, default = words[0].partition("=")
        if not _NAME_RE.fullmatch(name):
            raise _Refusal(f"ARG name {name!r} is not a valid variable name")
        value: str | None = default if eq else None
        if name in self.build_args:
            value = self.build_args[name]
        elif value is None and self.seen_from:
            value = self.meta_args.get(name)  # a global ARG re-declared after FROM
        if not self.seen_from and not self.seen_other:
            if value is not None:
                self.meta_args[name] = value
        elif value is not None:
            self.args[name] = value
        return Arg(name=name, value=value, line=line, text=text)

    def env_(self, rest: str, line: int, text: str) -> Env:
        words = _words(rest, self.vars())
        if not words:
            raise _Refusal("ENV needs NAME=value")
        pairs: list[tuple[str, str]] = []
        if "=" not in words[0]:
            # The old form: ENV NAME the rest of the line.
            if len(words) < 2:
                raise _Refusal(f"ENV {words[0]} needs a value (ENV NAME=value)")
            pairs.append((words[0], " ".join(words[1:])))
        else:
            for word in words:
                name, eq, value = word.partition("=")
                if not eq or not name:
                    raise _Refusal(f"ENV expects NAME=value pairs, got {word!r}")
                pairs.append((name, value))
        for name, value in pairs:
            if "\0" in name or "\0" in value or any(c.isspace() for c in name):
                raise _Refusal(f"ENV name {name!r} is not valid")
            self.env[name] = value
        return Env(vars=tuple(pairs), line=line, text=text)

    def copy(self, keyword: str, rest: str, line: int, text: str) -> Copy:
        words = rest.split()
        n_flags = 0
        while n_flags < len(words) and words[n_flags].startswith("--"):
            n_flags += 1
        flags, _ = _flags(words[:n_flags], ("chown", "chmod"), keyword)
        body = rest.split(None, n_flags)[-1] if n_flags else rest
        argv = _json_form(body)
        vars = self.vars()
        parts = [_expand(a, vars) for a in argv] if argv is not None else _words(body, vars)
        if len(parts) < 2:
            raise _Refusal(f"{keyword} needs at least one source and a destination")
        sources, dest = tuple(parts[:-1]), parts[-1]
        for src in sources:
            if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", src) or src.startswith("git@"):
                raise _Refusal(
                    f"{keyword} from a URL ({src}) is not supported: sources must be local "
                    "files in the build context; download them in a RUN step instead"
                )
        if not dest:
            raise _Refusal(f"{keyword} needs a destination")
        chown = _expand(flags["chown"], vars) if "chown" in flags else None
        chmod = flags.get("chmod")
        if chmod is not None and not re.fullmatch(r"[0-7]{3,4}", chmod):
            raise _Refusal(f"{keyword} --chmod takes an octal mode like 755, got {chmod!r}")
        return Copy(
            sources=sources,
            dest=dest,
            chown=chown,
            chmod=chmod,
            add=keyword == "ADD",
            line=line,
            text=text,
        )


def parse(
    text: str,
    *,
    env: Mapping[str, str] | None = None,
    build_args: Mapping[str, str] | None = None,
    where: str = "Dockerfile",
) -> list[Instruction]:
    """Parse Dockerfile text into instructions, refusing unsupported ones by name.

    `env` holds the variables the image already has (from earlier steps), for substitution;
    `build_args` override ARG defaults. Errors are InvalidError naming `where` and the line.
    """
    parser = _Parser(env or {}, build_args or {})
    out: list[Instruction] = []
    for line, logical in _logical_lines(text, where):
        match = _KEYWORD_RE.match(logical)
        keyword = match.group(1).upper() if match else logical.split(None, 1)[0]
        if match is None or keyword not in SUPPORTED:
            raise InvalidError(
                f"{where} line {line}: {keyword} is not supported by ketch's image builder "
                f"(supported: {', '.join(SUPPORTED)})"
            )
        rest = (match.group(2) or "").strip()
        if not rest:
            raise InvalidError(f"{where} line {line}: {keyword} needs arguments")
        try:
            out.append(parser.instruction(keyword, rest, line, logical))
        except _Refusal as exc:
            raise InvalidError(f"{where} line {line}: {exc}") from None
    return out
