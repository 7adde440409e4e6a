"""The gateway's settings: a YAML file read into strict models, then TUNEGATE_* environment overrides.

Unknown keys are an error naming the key and the file. Secrets are written as ``$ENV_NAME`` and read from
the environment when used; the file never holds them and neither does the database.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from tunegate.config.names import WILDCARD, alias_name_problem, team_name_problem, upstream_name_problem
from tunegate.config.prices import PriceTableError, load_prices
from tunegate.config.splits import ModelRepeated, WeightsOff, split_problem

DEFAULT_CONFIG = Path(__file__).with_name("tunegate.yaml")
METRICS_OPEN_ENV = "TUNEGATE_METRICS_OPEN"  # "1": /metrics open (what `serve --demo` sets for its workers)
_ENV_REF = re.compile(r"^\$([A-Za-z_][A-Za-z0-9_]*)$")

Policy = Literal["prepend", "if_absent", "replace"]


class ConfigError(ValueError):
    """The configuration file cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def env_ref(value: str | None) -> str | None:
    """``$OPENAI_API_KEY`` → ``OPENAI_API_KEY``; anything else → None."""
    match = _ENV_REF.match(value or "")
    return match.group(1) if match else None


def resolve_secret(value: str | None) -> str | None:
    """Read a ``$NAME`` reference from the environment at the moment it is needed."""
    name = env_ref(value)
    return os.environ.get(name) if name else value


class DatabaseSettings(_Strict):
    url: str = "sqlite:///./tunegate.db"


class ServerSettings(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    admin_key: str | None = "$TUNEGATE_ADMIN_KEY"
    max_body_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    # Upstream timeouts, seconds: connecting is quick or the upstream is down; answering may take minutes.
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=600.0, gt=0)
    # Client connections (`tunegate serve`, each process): an idle connection is closed keep_alive_seconds after
    # it opens or after its last answer; a request's headers must arrive within header_timeout_seconds (408) and
    # hold at most max_header_bytes (431); a body that stops arriving for body_timeout_seconds gets 408; beyond
    # max_connections open connections or requests in flight, requests get 503; on SIGTERM, requests in flight
    # get shutdown_grace_seconds to finish, then are cancelled.
    keep_alive_seconds: int = Field(default=5, ge=1)
    header_timeout_seconds: float = Field(default=10.0, gt=0)
    body_timeout_seconds: float = Field(default=30.0, gt=0)
    max_header_bytes: int = Field(default=32 * 1024, ge=1024)
    max_connections: int = Field(default=1024, ge=1)
    shutdown_grace_seconds: int = Field(default=30, ge=0)


class UsageSettings(_Strict):
    flush_interval: float = Field(default=1.0, gt=0)
    batch_size: int = Field(default=200, gt=0)
    # The keys of a request's `metadata` its usage record keeps (the rest are dropped; none listed: none kept).
    # At most 16, as OpenAI allows a request; each a name reports can group by as metadata.<key>.
    metadata_keys: list[Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]] = Field(
        default_factory=list, max_length=16
    )
    # Where each process journals its usage records before answering (tunegate.registry.journal); one directory
    # per database. None: beside the SQLite file (<file>.usage-journal), else in the temporary directory.
    journal_dir: Path | None = None


class CacheSettings(_Strict):
    # How long a key or alias lookup is served from memory: the bound on how stale another replica's
    # change can be seen here. Changes made through this process are visible at once.
    ttl_seconds: float = Field(default=5.0, ge=0)


class MetricsSettings(_Strict):
    # /metrics shows every team's aliases, models, tokens and spend, so it wants a token by default:
    # "$ENV_NAME": "Authorization: Bearer <its value>" (everyone is refused while the variable is unset);
    # None: everyone is refused (403 metrics_token_unset) unless `open` is true.
    token: str | None = None
    # true: /metrics answers without a token, for a scraper on a private network (`tunegate serve --demo` sets it,
    # as TUNEGATE_METRICS_OPEN=1, when no token is configured).
    open: bool = False

    @field_validator("token")
    @classmethod
    def _token_is_a_reference(cls, value: str | None) -> str | None:
        if value is not None and env_ref(value) is None:
            raise ValueError("write the token as $ENV_NAME and set that environment variable")
        return value

    @model_validator(mode="after")
    def _token_or_open(self) -> MetricsSettings:
        if self.open and self.token is not None:
            raise ValueError("'open' and 'token' are both set: choose one (a token, or open to everyone)")
        return self


class PricesSettings(_Strict):
    # The price table every usage record is costed with (None: the shipped config/prices.yaml). A relative
    # path is read from the directory of the configuration file.
    file: str | None = None


class UpstreamSettings(_Strict):
    base_url: str
    api_key: str | None = None

    @field_validator("api_key")
    @classmethod
    def _secret_is_a_reference(cls, value: str | None) -> str | None:
        if value is not None and env_ref(value) is None:
            raise ValueError("write the key as $ENV_NAME and set that environment variable; keys are never stored")
        return value


class TargetSettings(_Strict):
    model: str
    upstream: str | None = None  # default: the alias's upstream
    system_prompt: str | None = None


class SplitSettings(_Strict):
    model: str
    weight: int = Field(ge=1, le=100)  # percent of the alias's traffic
    upstream: str | None = None  # default: the alias's upstream
    system_prompt: str | None = None


class AliasSettings(_Strict):
    upstream: str
    model: str | None = None  # required unless `split` is given; left out for a pattern (`gpt-4o*`, `*`)
    system_prompt: str | None = None
    fallback: TargetSettings | None = None
    policy: Policy = "prepend"
    team: str | None = None  # owning team: the alias is visible to that team only and shadows a global one
    teams: list[str] = Field(default_factory=list)  # global alias restricted to these teams; empty: all
    # A canary: weights adding up to 100; the first entry is the target, the others canaries.
    split: list[SplitSettings] | None = None
    allow_catch_all: bool = False  # needed to create `*`, or a pattern matching existing aliases


class FinetuneSettings(_Strict):
    # Where a team's files go and its jobs run: team_upstreams[team], else `upstream`, else the only upstream.
    # A job bound to an alias runs on alias_upstreams[alias], else the upstream of the alias's target.
    upstream: str | None = None
    team_upstreams: dict[str, str] = Field(default_factory=dict)
    alias_upstreams: dict[str, str] = Field(default_factory=dict)
    poll_interval: float = Field(default=30.0, gt=0)  # seconds between passes over the open jobs
    lease_seconds: float = Field(default=300.0, gt=0)  # a job claimed by a poller that died is free again after
    max_file_bytes: int = Field(default=64 * 1024 * 1024, gt=0)  # larger uploads get 413
    retirement_check_interval: float = Field(default=3600.0, gt=0)  # seconds between reads of GET /v1/models
    retirement_window_days: int = Field(default=90, ge=0)  # aliases whose target retires this soon are listed


class TeamSettings(_Strict):
    name: str  # tunegate.config.names: checked by _check_names, which names the key


class Settings(_Strict):
    database: DatabaseSettings = DatabaseSettings()
    server: ServerSettings = ServerSettings()
    usage: UsageSettings = UsageSettings()
    cache: CacheSettings = CacheSettings()
    prices: PricesSettings = PricesSettings()
    metrics: MetricsSettings = MetricsSettings()
    finetune: FinetuneSettings = FinetuneSettings()
    upstreams: dict[str, UpstreamSettings] = Field(default_factory=dict)
    teams: list[TeamSettings] = Field(default_factory=list)
    aliases: dict[str, AliasSettings] = Field(default_factory=dict)
    source: str = Field(default="<defaults>", exclude=True)

    @property
    def admin_key(self) -> str | None:
        return resolve_secret(self.server.admin_key)

    @property
    def prices_path(self) -> Path | None:
        if self.prices.file is None:
            return None
        path = Path(self.prices.file)
        return path if path.is_absolute() or self.source.startswith("<") else Path(self.source).parent / path


def _describe(error: ValidationError, path: str) -> str:
    lines = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            lines.append(f"{path}: unknown key '{where}'")
        else:
            lines.append(f"{path}: {where}: {item['msg']}")
    return "\n".join(lines)


def _env_overrides(raw: dict[str, Any]) -> dict[str, Any]:
    env = os.environ
    if url := env.get("TUNEGATE_DATABASE_URL"):
        raw.setdefault("database", {})["url"] = url
    server = raw.setdefault("server", {})
    if "TUNEGATE_ADMIN_KEY" in env:
        server["admin_key"] = "$TUNEGATE_ADMIN_KEY"
    if "TUNEGATE_METRICS_TOKEN" in env:
        raw.setdefault("metrics", {})["token"] = "$TUNEGATE_METRICS_TOKEN"
    elif env.get(METRICS_OPEN_ENV) == "1":
        metrics = raw.setdefault("metrics", {})
        if isinstance(metrics, dict) and metrics.get("token") is None:  # a configured token still applies
            metrics["open"] = True
    if host := env.get("TUNEGATE_HOST"):
        server["host"] = host
    if port := env.get("TUNEGATE_PORT"):
        server["port"] = port
    return raw


def load_settings(path: str | Path | None = None) -> Settings:
    """Read the YAML at ``path`` (else $TUNEGATE_CONFIG, else the example), then apply the environment."""
    chosen = Path(path or os.environ.get("TUNEGATE_CONFIG") or DEFAULT_CONFIG)
    try:
        raw = yaml.safe_load(chosen.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"{chosen}: cannot read: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{chosen}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{chosen}: the top level must be a mapping of keys")
    raw = _env_overrides(raw)
    settings = parse_settings(raw, str(chosen))
    _check_prices(settings)
    return settings


def parse_settings(raw: dict[str, Any], source: str) -> Settings:
    """Validate a configuration already read: the file's, or the one ``tunegate apply`` sends."""
    try:
        settings = Settings.model_validate({**raw, "source": source})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from exc
    _check_names(settings)
    _check_references(settings)
    return settings


def _check_prices(settings: Settings) -> None:
    # A bad price table is a start-up error naming the entry and the field, like a bad key in this file.
    try:
        load_prices(settings.prices_path)
    except PriceTableError as exc:
        raise ConfigError(f"{settings.source}: prices.file: {exc}") from exc


def _check_names(settings: Settings) -> None:
    # The registry's rules (tunegate.config.names), applied here so a bad name is a configuration error naming its key,
    # not a failure half-way through applying the file to the database.
    named = [(f"teams[{i}].name", team_name_problem(team.name)) for i, team in enumerate(settings.teams)]
    named += [(f"upstreams.{name}", upstream_name_problem(name)) for name in settings.upstreams]
    named += [(f"aliases.{name}", alias_name_problem(name)) for name in settings.aliases]
    for key, problem in named:
        if problem is not None:
            raise ConfigError(f"{settings.source}: {key}: {problem}")


def _check_references(settings: Settings) -> None:
    team_names = {team.name for team in settings.teams}
    for name, alias in settings.aliases.items():
        _check_alias_target(settings.source, name, alias)
        upstreams = [alias.upstream] + ([alias.fallback.upstream] if alias.fallback and alias.fallback.upstream else [])
        upstreams += [entry.upstream for entry in alias.split or () if entry.upstream]
        for upstream in upstreams:
            if upstream not in settings.upstreams:
                raise ConfigError(f"{settings.source}: aliases.{name}: unknown upstream '{upstream}'")
        for team in [*([alias.team] if alias.team else []), *alias.teams]:
            if team not in team_names:
                raise ConfigError(f"{settings.source}: aliases.{name}: unknown team '{team}'")


def _check_alias_target(source: str, name: str, alias: AliasSettings) -> None:
    where = f"{source}: aliases.{name}"
    if WILDCARD in name:
        if alias.model is not None or alias.split is not None:
            raise ConfigError(
                f"{where}: a pattern forwards the model name a client asks for; leave out 'model', 'split'"
            )
        return
    if (alias.model is None) == (alias.split is None):
        raise ConfigError(f"{where}: give either 'model' or 'split'")
    if alias.split is not None:
        if alias.system_prompt is not None:
            raise ConfigError(f"{where}: with 'split', give each entry its own 'system_prompt'")
        problem = split_problem(alias.split, alias.upstream)
        if isinstance(problem, WeightsOff):
            raise ConfigError(f"{where}: split: the weights add up to {problem.total}; they must add up to 100")
        if isinstance(problem, ModelRepeated):
            raise ConfigError(f"{where}: split[{problem.index}]: repeats model '{problem.model}'; give each model once")
