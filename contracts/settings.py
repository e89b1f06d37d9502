"""Small helpers every service's settings use: comma-separated lists and Postgres URIs."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, ValidationError
from pydantic_settings import NoDecode


def settings_problems(exc: ValidationError) -> str:
    """Every problem of a settings object in one line: `NAME: what is wrong; ...` (services print it
    as `<service>: error: ...` and exit 1, never with a stack trace)."""
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


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
