"""wrk, the closed-loop HTTP load generator the benchmarks drive: one POST body, N connections.

`run` returns what a run did. With `statuses=True`, a Lua `response` hook also counts answers by
status (200, 503 and how many of those carried Retry-After, anything else). The hook costs wrk CPU
on this shared machine, so throughput figures are taken without it. With `honour_retry_after=True`
the clients also wait as each 503's Retry-After says, as well-behaved clients do.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

POST = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [[{body}]]
"""
STATUSES = """
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) ok, shed, other, retry_after, waits = 0, 0, 0, 0, {} end
function response(status, headers, body)
  if status == 200 then ok = ok + 1
  elseif status == 503 then
    shed = shed + 1
    local after = headers["retry-after"] or headers["Retry-After"]
    if after then
      retry_after = retry_after + 1
      table.insert(waits, 1000 * tonumber(after))
    end
  else other = other + 1 end
end
function done(summary, latency, requests)
  local o, s, x, r = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    o, s, x, r = o + t:get("ok"), s + t:get("shed"), x + t:get("other"), r + t:get("retry_after")
  end
  io.write(string.format("statuses: ok=%d shed=%d other=%d retry_after=%d\\n", o, s, x, r))
end
"""
# Clients that honour Retry-After: each 503 with one makes a connection of the thread wait that long
# before its next request. wrk calls `delay` on a connection right after that connection's
# `response` (one event loop per thread), so in practice the waiting connection is the refused one.
HONOUR_RETRY_AFTER = """
function delay()
  if #waits > 0 then return table.remove(waits, 1) end
  return 0
end
"""


@dataclass
class Wrk:
    seconds: int
    requests: int
    rps: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    # With statuses=True: answers by status.
    ok: int = 0
    shed: int = 0  # 503
    retry_after: int = 0  # 503 with Retry-After
    other: int = 0


def ms(text: str) -> float:
    """wrk's duration text ("812.00us", "3.41ms", "1.02s") in milliseconds."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _number(pattern: str, out: str, default: str | None = None) -> str:
    found = re.search(pattern, out)
    if found is None:
        if default is None:
            raise RuntimeError(f"wrk printed no {pattern!r}:\n{out}")
        return default
    return found.group(1)


def run(
    url: str,
    body: str,
    clients: int,
    seconds: int,
    workdir: Path,
    statuses: bool = False,
    honour_retry_after: bool = False,
) -> Wrk:
    """One wrk run. `statuses`: count answers by status. `honour_retry_after` (implies `statuses`):
    the clients wait as a 503's Retry-After says before sending again."""
    statuses = statuses or honour_retry_after
    script = workdir / ("statuses.lua" if statuses else "post.lua")
    lua = POST.format(body=body) + (STATUSES if statuses else "")
    script.write_text(lua + (HONOUR_RETRY_AFTER if honour_retry_after else ""))
    out = subprocess.run(
        ["wrk", f"-t{min(clients, 2)}", f"-c{clients}", f"-d{seconds}s", "--timeout", "30s", "--latency",
         "-s", str(script), url],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    ).stdout  # fmt: skip
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result = Wrk(
        seconds=seconds,
        requests=int(_number(r"(\d+) requests in", out)),
        rps=float(_number(r"Requests/sec:\s+([\d.]+)", out)),
        non_2xx=int(_number(r"Non-2xx or 3xx responses: (\d+)", out, "0")),
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
        p50_ms=ms(_number(r"\s50%\s+(\S+)", out)),
        p99_ms=ms(_number(r"\s99%\s+(\S+)", out)),
    )
    if statuses:
        counts = re.search(r"statuses: ok=(\d+) shed=(\d+) other=(\d+) retry_after=(\d+)", out)
        if counts is None:
            raise RuntimeError(f"wrk's status hook printed nothing:\n{out}")
        result.ok, result.shed, result.other, result.retry_after = (int(n) for n in counts.groups())
    return result
