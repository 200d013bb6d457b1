"""The function spec: one typed contract for what a deploy defines and the server runs.

A function's definition travels as JSON (the SDK's deploy body, a stored app version) and
is decoded into these frozen models once, where it enters the server: at the deploy
endpoint and when a stored version is loaded. Inside the server it is read as attributes
(`fdef.spec.options.timeout`), and every default lives here, once. The limits mirror the
SDK's own checks (`ketch._utils.options`); a wrong type, a value out of range or an unknown
key is refused naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from ketch._utils.labels import DOMAIN_PATTERN, LABEL_PATTERN, NAME_PATTERN, NAME_RULE, is_name
from ketch._utils.options import (
    DEFAULT_TIMEOUT,
    MAX_BATCH_SIZE,
    MAX_BATCH_WAIT_MS,
    MAX_CONCURRENT_INPUTS,
    MAX_GPU_COUNT,
    MAX_TIMEOUT,
)
from ketch._utils.protocol.container import ContainerFunction, ContainerWeb
from ketch.retries import MAX_RETRIES, backoff_delay

# Patterns are matched by pydantic's regex engine, which also refuses strings that are not
# valid Unicode (lone surrogates from JSON escapes), so such strings never reach SQLite or
# a file name.
TAG_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]{0,127}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
ID_PATTERN = r"^[a-z]{2}-[A-Za-z0-9_-]{1,64}$"
TEXT_PATTERN = r"^[^\x00]*$"  # no NUL: it cannot be in a path, an argument or an environment
_NONEMPTY_TEXT = r"^[^\x00]+$"
_IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
_IMAGE_ENV_KEY = r"^[^\x00=]+$"
_GPU = rf"^[A-Za-z0-9-]+!?(:[1-{MAX_GPU_COUNT}])?$"
_BASE64 = r"^[A-Za-z0-9+/]*={0,2}$"

# Bounds the SDK does not set but a server needs: a count the scheduler loops over must not
# be able to keep the loop busy forever, and numbers must fit SQLite's 64-bit integers.
MAX_CONTAINERS = 10_000
MAX_MEMORY_MIB = 16 * 1024 * 1024
MAX_CPU = 1024.0
MAX_INPUTS_PER_CONTAINER = 2**31


def _integral(value: Any) -> Any:
    # JSON has one number type: 3.0 is the integer 3 there. Strings and bools stay refused.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_integral)]


def _name(value: str) -> str:
    # Said with the name given (names are not secret), as the CLI has always said it.
    if not is_name(value):
        raise ValueError(f"invalid name {value!r}: {NAME_RULE}")
    return value


Name = Annotated[
    str, AfterValidator(_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})
]
Tag = Annotated[str, StringConstraints(pattern=TAG_PATTERN)]
Sha256 = Annotated[str, StringConstraints(pattern=SHA256_PATTERN)]
Text = Annotated[str, StringConstraints(pattern=TEXT_PATTERN)]
NonEmptyText = Annotated[str, StringConstraints(pattern=_NONEMPTY_TEXT)]
Ident = Annotated[str, StringConstraints(pattern=_IDENT, max_length=256)]
Gpu = Annotated[str, StringConstraints(pattern=_GPU, max_length=64)]
Seconds = Annotated[Int, Field(ge=1, le=MAX_TIMEOUT)]
Containers = Annotated[Int, Field(ge=0, le=MAX_CONTAINERS)]
Cores = Annotated[float, Field(gt=0, le=MAX_CPU)]
Mib = Annotated[Int, Field(ge=1, le=MAX_MEMORY_MIB)]


class Contract(BaseModel):
    """Strict: no coercion ("5" is not 5), no unknown keys, no NaN or infinity. Frozen: a
    decoded spec is shared by every pool and container of its function version."""

    model_config = ConfigDict(strict=True, extra="forbid", allow_inf_nan=False, frozen=True)


# -- function options (FunctionOptions, as `options_spec` sends them) ------------------
class RetriesSpec(Contract):
    max_retries: Int = Field(ge=0, le=MAX_RETRIES)
    backoff_coefficient: float = Field(default=2.0, ge=1, le=10)
    initial_delay: float = Field(default=1.0, ge=0, le=60)
    max_delay: float = Field(default=60.0, ge=1, le=60)

    def delay_for(self, k: int) -> float:
        """Seconds before the `k`-th retry (k >= 1): the formula of `ketch.Retries`."""
        return backoff_delay(self.initial_delay, self.backoff_coefficient, self.max_delay, k)


class PeriodSchedule(Contract):
    """`ketch.Period`: runs every interval, counted from the deploy."""

    type: Literal["period"]
    years: Annotated[Int, Field(ge=0, le=100)] = 0
    months: Annotated[Int, Field(ge=0, le=1200)] = 0
    weeks: Annotated[Int, Field(ge=0, le=10_000)] = 0
    days: Annotated[Int, Field(ge=0, le=100_000)] = 0
    hours: Annotated[Int, Field(ge=0, le=10**6)] = 0
    minutes: Annotated[Int, Field(ge=0, le=10**8)] = 0
    seconds: Annotated[float, Field(ge=0, le=10**10)] = 0.0

    @model_validator(mode="after")
    def _long_enough(self) -> PeriodSchedule:
        from ketch.schedule import MIN_PERIOD_SECONDS

        if self.years == 0 and self.months == 0 and self.fixed_seconds < MIN_PERIOD_SECONDS:
            raise ValueError(f"a Period must be at least {MIN_PERIOD_SECONDS:g} second")
        return self

    @property
    def fixed_seconds(self) -> float:
        """The weeks, days, hours, minutes and seconds parts together, in seconds."""
        days = self.weeks * 7 + self.days
        return days * 86400.0 + self.hours * 3600 + self.minutes * 60 + self.seconds


class CronSchedule(Contract):
    """`ketch.Cron`: five cron fields read in an IANA time zone."""

    type: Literal["cron"]
    cron: Annotated[str, StringConstraints(pattern=r"^[^\x00]{1,256}$")]
    timezone: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_+/-]{1,64}$")] = "UTC"

    @model_validator(mode="after")
    def _valid(self) -> CronSchedule:
        from ketch.exception import InvalidError
        from ketch.schedule import check_cron

        try:
            check_cron(self.cron, self.timezone)
        except InvalidError as exc:
            raise ValueError(str(exc)) from None
        return self


ScheduleSpec = Annotated[PeriodSchedule | CronSchedule, Field(discriminator="type")]


class OptionsSpec(Contract):
    timeout: Seconds = DEFAULT_TIMEOUT
    startup_timeout: Seconds | None = None
    retries: RetriesSpec | None = None
    min_containers: Containers = 0
    max_containers: Annotated[Int, Field(ge=1, le=MAX_CONTAINERS)] | None = None
    buffer_containers: Containers = 0
    scaledown_window: Seconds = 60
    max_inputs: Int = Field(default=1, ge=1, le=MAX_CONCURRENT_INPUTS)
    target_inputs: Annotated[Int, Field(ge=1, le=MAX_CONCURRENT_INPUTS)] | None = None
    batch_max_size: Annotated[Int, Field(ge=1, le=MAX_BATCH_SIZE)] | None = None
    batch_wait_ms: Annotated[Int, Field(ge=0, le=MAX_BATCH_WAIT_MS)] | None = None
    gpu: Gpu | Annotated[list[Gpu], Field(min_length=1, max_length=16)] | None = None
    cpu: Cores | Annotated[list[Cores], Field(min_length=2, max_length=2)] | None = None
    memory: Mib | Annotated[list[Mib], Field(min_length=2, max_length=2)] | None = None
    block_network: bool = False
    enable_memory_snapshot: bool = False
    inputs_per_container: Annotated[Int, Field(ge=1, le=MAX_INPUTS_PER_CONTAINER)] | None = None
    schedule: ScheduleSpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> OptionsSpec:
        if self.target_inputs is not None and self.target_inputs > self.max_inputs:
            raise ValueError("target_inputs must not exceed max_inputs")
        if self.max_containers is not None and self.max_containers < self.min_containers:
            raise ValueError("max_containers must be at least min_containers")
        for name in ("cpu", "memory"):
            pair = getattr(self, name)
            if isinstance(pair, list) and pair[0] > pair[1]:
                raise ValueError(f"{name}=[request, limit] needs request <= limit")
        return self

    @property
    def effective_startup_timeout(self) -> int:
        """Seconds a container may take to start: `startup_timeout`, else `timeout`."""
        return self.startup_timeout or self.timeout

    @property
    def batch_size(self) -> int:
        """@batched: the most inputs one call takes (0: not batched)."""
        return self.batch_max_size or 0


# -- images (Image.spec) ---------------------------------------------------------------
class _PipOptions(Contract):
    packages: list[NonEmptyText] = []
    index_url: Text | None = None
    extra_index_url: Text | None = None
    find_links: Text | None = None
    pre: bool = False
    extra_options: Text = ""


class PipInstallStep(_PipOptions):
    type: Literal["pip_install"]


class Requirements(Contract):
    path: Text
    content: Text


class UvPipInstallStep(_PipOptions):
    type: Literal["uv_pip_install"]
    requirements: list[Requirements] = []


class EnvStep(Contract):
    type: Literal["env"]
    vars: dict[Annotated[str, StringConstraints(pattern=_IMAGE_ENV_KEY)], Text]


class WorkdirStep(Contract):
    type: Literal["workdir"]
    path: NonEmptyText


# A build step's GPUs, requested as a function's are (run_commands/run_function(gpu=)).
BuildGpu = Gpu | Annotated[list[Gpu], Field(min_length=1, max_length=16)] | None


class RunCommandsStep(Contract):
    type: Literal["run_commands"]
    commands: list[Text]
    gpu: BuildGpu = None


class AptInstallStep(Contract):
    type: Literal["apt_install"]
    packages: list[NonEmptyText]


class DockerfileCommandsStep(Contract):
    """Dockerfile lines (Image.dockerfile_commands / from_dockerfile); COPY sources are read
    from `context_dir` and hashed into `context_sha256` when the image is defined."""

    type: Literal["dockerfile_commands"]
    commands: list[Text]
    context_dir: NonEmptyText | None = None
    context_sha256: Sha256 | None = None
    build_args: dict[Annotated[str, StringConstraints(pattern=_IDENT)], Text] = {}
    dockerfile: NonEmptyText | None = None


class FromRegistryStep(Contract):
    """Image.from_registry: the image's first step. `secret` names a stored secret with the
    registry login (its values never travel in the spec)."""

    type: Literal["from_registry"]
    ref: NonEmptyText
    secret: Name | None = None
    secret_environment: Name | None = None
    add_python: Annotated[str, StringConstraints(pattern=r"^3\.[0-9]{1,3}$")] | None = None
    setup_dockerfile_commands: list[Text] = []


class MicromambaStep(Contract):
    """Image.micromamba: the image's first step, a conda environment at /opt/conda."""

    type: Literal["micromamba"]
    python_version: Annotated[str, StringConstraints(pattern=r"^3\.[0-9]{1,3}$")]


class MicromambaInstallStep(Contract):
    """Image.micromamba_install: conda match specs, solved with what /opt/conda has."""

    type: Literal["micromamba_install"]
    specs: Annotated[list[NonEmptyText], Field(min_length=1)]
    channels: list[NonEmptyText] = []


class _BuildSecret(Contract):
    """A build step's secret: stored (`name`), inline (`values`, as the SDK sends them), or
    inline and sealed by the server (`digest`, as images are stored)."""

    name: Name | None = None
    environment: Name | None = None
    required_keys: list[Text] = []
    values: dict[Annotated[str, StringConstraints(pattern=_IMAGE_ENV_KEY)], Text] | None = None
    digest: Sha256 | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> _BuildSecret:
        if sum(x is not None for x in (self.name, self.values, self.digest)) != 1:
            raise ValueError("a build secret is a name, inline values or a digest")
        return self


class _BuildVolume(Contract):
    mount: Annotated[str, StringConstraints(pattern=r"^/[^\x00]*$", max_length=4096)]
    name: Name | None = None
    environment: Name | None = None
    create_if_missing: bool = False
    volume_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)] | None = None


class RunFunctionStep(Contract):
    """Image.run_function: a function pickled by value, run in the image being built;
    secrets and volumes by reference, resolved by the server when the step runs."""

    type: Literal["run_function"]
    name: Text
    function: Annotated[str, StringConstraints(pattern=_BASE64, min_length=1)]
    args: Annotated[str, StringConstraints(pattern=_BASE64, min_length=1)]
    env: dict[Annotated[str, StringConstraints(pattern=_IMAGE_ENV_KEY)], Text] = {}
    secrets: list[_BuildSecret] = []
    volumes: list[_BuildVolume] = []
    timeout: Int = Field(default=3600, ge=1, le=24 * 3600)
    force: Text | None = None
    gpu: BuildGpu = None


ImageStep = Annotated[
    PipInstallStep
    | UvPipInstallStep
    | EnvStep
    | WorkdirStep
    | RunCommandsStep
    | AptInstallStep
    | DockerfileCommandsStep
    | FromRegistryStep
    | MicromambaStep
    | MicromambaInstallStep
    | RunFunctionStep,
    Field(discriminator="type"),
]


class ImageFile(Contract):
    local_path: NonEmptyText
    remote_path: NonEmptyText
    kind: Literal["file", "dir"]
    copy_: bool = Field(alias="copy")  # `copy` would hide BaseModel.copy
    ignore: list[Text] = []
    sha256: Sha256
    position: Int = Field(ge=0, le=100_000)
    python_module: Text | None = None


class ImageSpec(Contract):
    python_version: Annotated[str, StringConstraints(pattern=r"^3\.[0-9]{1,3}$")]
    steps: list[ImageStep] = []
    files: list[ImageFile] = []


# -- secrets and volumes ---------------------------------------------------------------
class InlineSecret(Contract):
    kind: Literal["inline"]
    values: dict[Annotated[str, StringConstraints(pattern=_IMAGE_ENV_KEY)], Text]


class NamedSecret(Contract):
    kind: Literal["named"]
    name: Name
    environment: Name | None = None
    required_keys: list[Text] = []


class SealedSecret(Contract):
    """An inline secret as stored: its values encrypted with the server's key."""

    kind: Literal["sealed"]
    data: Annotated[str, StringConstraints(pattern=_BASE64)]


class StoredNamedSecret(Contract):
    kind: Literal["named"]
    name: Name
    environment: Name


SecretRef = Annotated[InlineSecret | NamedSecret, Field(discriminator="kind")]
StoredSecret = Annotated[SealedSecret | StoredNamedSecret, Field(discriminator="kind")]

MountPath = Annotated[str, StringConstraints(pattern=r"^/[^\x00]*$", max_length=4096)]


class VolumeByName(Contract):
    mount: MountPath
    name: Name
    environment: Name | None = None
    create_if_missing: bool = False


class VolumeById(Contract):
    mount: MountPath
    volume_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class StoredVolume(Contract):
    mount: MountPath
    volume_id: Annotated[str, StringConstraints(pattern=ID_PATTERN)]
    name: Name | None
    environment: Name


# -- web endpoints (ketch.web decorators) ----------------------------------------------
class _WebCommon(Contract):
    label: Annotated[str, StringConstraints(pattern=LABEL_PATTERN)] | None = None
    custom_domains: list[
        Annotated[str, StringConstraints(pattern=DOMAIN_PATTERN, max_length=253)]
    ] = []
    requires_proxy_auth: bool = False


class FastapiWeb(_WebCommon):
    type: Literal["fastapi"]
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"] = "GET"
    docs: bool = False


class AppWeb(_WebCommon):
    type: Literal["asgi", "wsgi"]


class ServerWeb(_WebCommon):
    type: Literal["web_server"]
    port: Int = Field(ge=1, le=65535)
    startup_timeout: float = Field(default=5.0, gt=0, le=MAX_TIMEOUT)


WebSpec = Annotated[FastapiWeb | AppWeb | ServerWeb, Field(discriminator="type")]


# -- functions and apps ----------------------------------------------------------------
class MethodSpec(Contract):
    is_generator: bool = False


class FunctionBase(Contract):
    tag: Tag
    kind: Literal["function", "cls"] = "function"
    module: Annotated[str, StringConstraints(pattern=r"^[^\x00/\\]+$", max_length=1024)] | None = (
        None
    )
    qualname: Text = ""
    serialized: Annotated[str, StringConstraints(pattern=_BASE64, min_length=1)] | None = None
    options: OptionsSpec
    image: ImageSpec
    is_generator: bool = False
    web: WebSpec | None = None
    web_method: Ident | None = None
    params: list[Ident] = []
    param_types: dict[Ident, Text] = {}
    methods: dict[Ident, MethodSpec] = {}

    @model_validator(mode="after")
    def _loadable(self) -> FunctionBase:
        if self.module is None and self.serialized is None:
            raise ValueError("a function needs a module to import or serialized code")
        return self

    def for_container(self) -> ContainerFunction:
        """What a container running this function is told of it, every field filled."""
        web = None
        if self.web is not None:
            w = self.web
            web = ContainerWeb(
                type=w.type,
                method=w.method if isinstance(w, FastapiWeb) else "GET",
                docs=w.docs if isinstance(w, FastapiWeb) else False,
                port=w.port if isinstance(w, ServerWeb) else 0,
                startup_timeout=w.startup_timeout if isinstance(w, ServerWeb) else 0.0,
            )
        return ContainerFunction(
            tag=self.tag,
            kind=self.kind,
            module=self.module,
            serialized=self.serialized,
            max_inputs=self.options.max_inputs,
            batched=self.options.batch_size > 0,
            web=web,
        )


class FunctionSpec(FunctionBase):
    """One function (or class, or class web method) of a deploy, as the SDK sends it."""

    secrets: list[SecretRef] = []
    volumes: list[VolumeByName | VolumeById] = []


class StoredFunction(FunctionBase):
    """A function of a stored version: secrets sealed, volumes resolved, URLs recorded."""

    secrets: list[StoredSecret] = []
    volumes: list[StoredVolume] = []
    web_url: Text | None = None
    web_host_url: Text | None = None
