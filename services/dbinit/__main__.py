"""`python -m services.dbinit`: the platform's databases, roles, ownership and grants (idempotent)."""

from __future__ import annotations

import sys

import psycopg2
from pydantic import ValidationError

from contracts.settings import settings_problems
from services.dbinit import Settings
from services.dbinit.setup import SetupError, set_up


def main() -> int:
    try:
        lines = set_up(Settings())  # type: ignore[call-arg]
    except ValidationError as exc:
        return fail(settings_problems(exc))
    except SetupError as exc:
        return fail(str(exc))
    except psycopg2.Error as exc:
        return fail(str(exc).strip().splitlines()[0])
    for line in lines:
        print(f"create-databases: {line}")
    return 0


def fail(message: str) -> int:
    print(f"create-databases: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
