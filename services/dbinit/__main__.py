"""`python -m services.dbinit`: the platform's databases, roles, ownership and grants (idempotent)."""

from __future__ import annotations

import logging
import sys

import psycopg2

from contracts.logs import configure_logging
from contracts.settings import SettingsError
from services.dbinit import Settings
from services.dbinit.setup import SetupError, set_up

log = logging.getLogger("services.dbinit")


def main() -> int:
    configure_logging("dbinit")
    try:
        lines = set_up(Settings())  # type: ignore[call-arg]
    except SettingsError as exc:
        return fail(str(exc))
    except SetupError as exc:
        return fail(str(exc))
    except psycopg2.Error as exc:
        return fail(str(exc).strip().splitlines()[0])
    for line in lines:
        log.info(line)
    return 0


def fail(message: str) -> int:
    print(f"create-databases: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
