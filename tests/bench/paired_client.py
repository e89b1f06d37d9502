"""One closed-loop client that takes turns between targets, request by request.

`python -m tests.bench.paired_client --seconds 60 --body-file body.json URL [URL ...]` sends the
same POST to each URL in turn (the order rotates every cycle, so no target always goes first) over
one keep-alive connection per URL, and prints {url: [latency in seconds, ...]} as JSON. Consecutive
requests see the same machine conditions, which on a shared machine vary more between two
5-second runs than a proxy hop costs. Any non-200 answer aborts with exit code 1.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--body-file", type=Path, required=True)
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args(argv)
    body = args.body_file.read_bytes()
    headers = {"Content-Type": "application/json"}
    targets = []
    for url in args.urls:
        parts = urlsplit(url)
        targets.append((url, http.client.HTTPConnection(parts.hostname, parts.port, timeout=30), parts.path))
    latencies: dict[str, list[float]] = {url: [] for url in args.urls}
    clock = time.perf_counter
    deadline, cycle = clock() + args.seconds, 0
    while clock() < deadline:
        shift = cycle % len(targets)
        for url, conn, path in targets[shift:] + targets[:shift]:
            started = clock()
            conn.request("POST", path, body, headers)
            answer = conn.getresponse()
            answer.read()
            latencies[url].append(clock() - started)
            if answer.status != 200:
                print(f"paired_client: error: {url} answered HTTP {answer.status}", file=sys.stderr)
                return 1
        cycle += 1
    json.dump(latencies, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
