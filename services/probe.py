"""`python -m services.probe URL`: exit 0 if URL answers 2xx within 3 s (container healthchecks)."""

from __future__ import annotations

import sys
import urllib.request


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m services.probe URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(argv[0], timeout=3) as response:  # noqa: S310 (our own URL)
            return 0 if 200 <= response.status < 300 else 1
    except OSError as exc:
        print(f"probe: {argv[0]}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
