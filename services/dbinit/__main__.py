"""`python -m services.dbinit`: make sure the platform's extra databases exist."""

from __future__ import annotations

import sys

import psycopg2
from pydantic import ValidationError

from contracts.settings import settings_problems
from services.dbinit import Settings, ensure_databases


def main() -> int:
    try:
        created = ensure_databases(Settings())  # type: ignore[call-arg]
    except ValidationError as exc:
        print(f"create-databases: error: {settings_problems(exc)}", file=sys.stderr)
        return 1
    except psycopg2.Error as exc:
        print(f"create-databases: error: {str(exc).strip().splitlines()[0]}", file=sys.stderr)
        return 1
    for name, new in created.items():
        print(f"create-databases: database {name!r} {'created' if new else 'exists'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
