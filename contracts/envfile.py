"""Reading `.env`-style files (`.env`, `.participants/NAME.env`): KEY=value lines, comments and blank
lines skipped, one level of quotes removed. Standard library only: host-side scripts import it."""

from __future__ import annotations

from pathlib import Path


def read_env_file(path: Path) -> dict[str, str]:
    values = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip().strip("'\"")
    return values
