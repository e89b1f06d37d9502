"""How every service of ours reads its settings, and the settings several services share.

Each service declares one pydantic-settings class with an `env_prefix` (services/<x>/settings.py,
trainer/config.py): a field's name is its environment variable's name without the prefix, so a
setting is declared once, with its default and its description. Settings under another prefix (the
tracking server, the prediction log's database, the gateway's LOG_*) are small classes of their own,
composed into the service's class as fields (`mlflow: MlflowSettings = nested(MlflowSettings)`),
each reading its own variables. `.env.example` is generated from these declarations
(infra/env_example.py).

A bad or missing value raises SettingsError, one line naming each variable and what is wrong; the
services print it as `<service>: error: ...` and exit non-zero, never with a stack trace.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Annotated, Any, Self
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# A secret's value in `.env.example`: `make env` writes a random one instead (infra/stack.py), and
# `make up` refuses it (infra/stack.py, check_env), as services/access does any password with "change".
SECRET_PLACEHOLDER = "<change-me>"  # nosec B105: a placeholder that is refused, never a secret


class SettingsError(Exception):
    """Settings the environment gets wrong, in one line: `NAME: what is wrong; ...`. Not a ValueError,
    so that a nested class's error is not wrapped into its parent's."""


class EnvSettings(BaseSettings):
    """The base of every settings class of ours: variables `<env_prefix><FIELD NAME>`, one-line errors."""

    model_config = SettingsConfigDict(extra="forbid")

    def __init__(self, **values: Any) -> None:
        problems = []
        for name, field in type(self).model_fields.items():  # nested classes first: all problems at once
            inner = field.annotation
            if name not in values and isinstance(inner, type) and issubclass(inner, EnvSettings):
                try:
                    values[name] = inner()
                except SettingsError as exc:
                    problems.append(str(exc))
                    values[name] = inner.model_construct()  # never used: this object is refused below
        try:
            super().__init__(**values)
        except ValidationError as exc:
            problems.insert(0, settings_problems(exc, type(self)))
        if problems:
            raise SettingsError("; ".join(problems))

    @classmethod
    def from_env(cls, values: Mapping[str, Any]) -> Self:
        """The settings with `values`, keyed by environment variable name, over the environment's
        (tests and tools that hold settings as the environment would). KeyError for a name that is
        none of the class's variables."""
        unknown = set(values) - {name for name, _ in env_fields(cls)}
        if unknown:
            raise KeyError(f"{cls.__name__} reads no {', '.join(sorted(unknown))}")
        return cls._from_env(values)

    @classmethod
    def _from_env(cls, values: Mapping[str, Any]) -> Self:
        fields: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            inner = field.annotation
            if isinstance(inner, type) and issubclass(inner, EnvSettings):
                fields[name] = inner._from_env(values)
            elif (key := f"{env_prefix(cls)}{name}".upper()) in values:
                fields[name] = values[key]
        return cls(**fields)


def secret_example() -> dict[str, Any]:
    """`json_schema_extra` of a required secret: `.env.example` shows the placeholder."""
    return {"example": SECRET_PLACEHOLDER}


def nested(cls: type[EnvSettings]) -> Any:
    """A field holding another prefix's settings, read from the environment with the parent."""
    return Field(default_factory=cls)


def env_prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config.get("env_prefix", ""))


def env_name(cls: type[BaseSettings], loc: tuple[int | str, ...]) -> str:
    """The environment variable behind an error's location in `cls` (nested classes followed)."""
    field = cls.model_fields.get(str(loc[0]))
    inner = field.annotation if field is not None else None
    if len(loc) > 1 and isinstance(inner, type) and issubclass(inner, BaseSettings):
        return env_name(inner, loc[1:])
    return f"{env_prefix(cls)}{loc[0]}".upper()


def settings_problems(exc: ValidationError, cls: type[BaseSettings]) -> str:
    """Every problem of a settings object in one line, each named by its environment variable."""
    problems = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        problems.append(f"{env_name(cls, loc)}: {error['msg']}" if loc else error["msg"])
    return "; ".join(problems)


def env_fields(cls: type[BaseSettings]) -> Iterator[tuple[str, FieldInfo]]:
    """(variable name, field) of every setting `cls` reads, nested classes included, in order."""
    for name, field in cls.model_fields.items():
        inner = field.annotation
        if isinstance(inner, type) and issubclass(inner, BaseSettings):
            yield from env_fields(inner)
        else:
            yield f"{env_prefix(cls)}{name}".upper(), field


def split_commas(value: str) -> list[str]:
    """'a, b,,c' -> ['a', 'b', 'c']; ValueError when nothing is named."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise ValueError("must name at least one item")
    return items


def _comma_list(value: object) -> object:
    if isinstance(value, list | tuple) and not value:
        raise ValueError("must name at least one item")
    return split_commas(value) if isinstance(value, str) else value


# A settings field read from a comma-separated environment variable (NoDecode: not parsed as JSON).
CommaList = Annotated[list[str], NoDecode, BeforeValidator(_comma_list)]


# --- Settings several services share ------------------------------------------------------------


class MlflowSettings(EnvSettings):
    """The tracking server (its credentials, MLFLOW_TRACKING_USERNAME/PASSWORD, are read by MLflow's
    client itself)."""

    model_config = SettingsConfigDict(env_prefix="MLFLOW_")

    tracking_uri: str = Field(description="the MLflow tracking server's URL")


class LocalMlflowSettings(MlflowSettings):
    """The tracking server, by default the one `make local` and the stack publish on this machine."""

    tracking_uri: str = Field("http://localhost:5000", description="the MLflow tracking server's URL")


class MonitoringDbSettings(EnvSettings):
    """The prediction log's database (each service logs in with its own role)."""

    model_config = SettingsConfigDict(env_prefix="MONITORING_")

    db_uri: str = Field("", description="the prediction log's Postgres URI; empty: no prediction log")


class PrometheusSettings(EnvSettings):
    model_config = SettingsConfigDict(env_prefix="PROMETHEUS_")

    url: str = Field("", description="Prometheus's base URL; empty: none")


class PostgresAdminSettings(EnvSettings):
    """The Postgres superuser: bootstrap (dbinit) and backups only."""

    model_config = SettingsConfigDict(env_prefix="POSTGRES_")

    admin_uri: str = Field(description="the superuser's URI, on any database it may connect to")


class S3Settings(EnvSettings):
    """The artifact store."""

    model_config = SettingsConfigDict(env_prefix="S3_")

    endpoint_url: str = Field(description="the S3 API's URL")
    bucket: str = Field(
        "mlflow", description="bucket for MLflow artifacts (created by the create-bucket job)"
    )


# --- Postgres URIs ---------------------------------------------------------------------------------


def libpq_uri(uri: str) -> str:
    """A Postgres URI for psycopg2/libpq: 'postgresql+psycopg2://...' -> 'postgresql://...'."""
    scheme, sep, rest = uri.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


def database_uri(uri: str, database: str) -> str:
    """The same login and server as `uri`, on another database of the cluster (scheme kept)."""
    parts = urlsplit(uri)
    return urlunsplit(parts._replace(path=f"/{database}"))


def sqlalchemy_uri(uri: str) -> str:
    """A Postgres URI for SQLAlchemy with psycopg2 (SQLAlchemy 2.1 maps bare postgresql:// to
    psycopg 3, which is not installed): 'postgresql://...' -> 'postgresql+psycopg2://...'."""
    scheme, sep, rest = uri.partition("://")
    if scheme in ("postgres", "postgresql"):
        scheme = "postgresql+psycopg2"
    return f"{scheme}{sep}{rest}"
