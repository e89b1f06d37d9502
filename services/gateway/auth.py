"""API keys for the gateway's prediction and feedback endpoints.

Keys come from `GATEWAY_API_KEYS` (`client=key,...`, from .env) and from `GATEWAY_API_KEYS_FILE`
(one `client=key` per line, `#` comments), which is read again whenever it changes: adding,
rotating or revoking a key takes effect within a second, without a restart. Clients send
`Authorization: Bearer <key>` or `X-API-Key: <key>`.

When any key is configured, or `GATEWAY_REQUIRE_API_KEYS=true` (then an empty key file lets
nobody in: revoking the last key never opens the gateway), every POST to `/models/...` needs one:
a missing or unknown key gets 401 in the error shape, naming the headers. `/health`, `/models` and
the OpenAPI description stay open for probes; with keys on, `/metrics` answers only on the
internal metrics port (`GATEWAY_METRICS_PORT`), never on the published one.
Keys are looked up by their SHA-256 digest, never compared character by character.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

HEADERS = "Authorization: Bearer <key> or X-API-Key: <key>"
RECHECK_S = 1.0  # how often the key file's modification time is looked at


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_keys(lines: Iterable[str], origin: str) -> dict[bytes, str]:
    """Digest of each key -> its client, from `client=key` items; ValueError naming a bad item."""
    found: dict[bytes, str] = {}
    for number, raw in enumerate(lines, start=1):
        item = raw.split("#", 1)[0].strip()
        if not item:
            continue
        client, sep, key = (part.strip() for part in item.partition("="))
        if not sep or not client or len(key) < 16:
            raise ValueError(f"{origin} item {number} is not client=key with a key of 16+ characters")
        found[_digest(key)] = client
    return found


class ApiKeys:
    """The configured keys; `client(headers)` names the client a request's key belongs to."""

    def __init__(self, inline: str = "", path: str = "", required: bool = False) -> None:
        self._inline = parse_keys(inline.split(","), "GATEWAY_API_KEYS")
        self._path = Path(path) if path else None
        self._from_file: dict[bytes, str] = {}
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._forced = required
        self._reload()

    @property
    def required(self) -> bool:
        self._refresh()  # a key added to an empty file turns the requirement on
        return self._forced or bool(self._inline) or bool(self._from_file)

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked >= RECHECK_S:
            self._checked = now
            self._reload()

    def _reload(self) -> None:
        """Read the key file again if it changed; a file that turns unreadable or invalid keeps the
        keys read before (logged), so a bad edit never opens the gateway."""
        if self._path is None:
            return
        try:
            stat = self._path.stat()
            stamp = (stat.st_mtime_ns, stat.st_size)
            if stamp == self._stamp:
                return
            keys = parse_keys(self._path.read_text().splitlines(), str(self._path))
        except (OSError, ValueError) as exc:
            log.error("API key file not (re)loaded, keeping %d keys: %s", len(self._from_file), exc)
            return
        self._from_file, self._stamp = keys, stamp
        log.info("API keys loaded from %s: %d clients", self._path, len(set(keys.values())))

    def client(self, authorization: str | None, api_key: str | None) -> str | None:
        """The client whose key the request carries, or None."""
        self._refresh()
        key = api_key
        if key is None and authorization is not None:
            scheme, _, token = authorization.partition(" ")
            key = token.strip() if scheme.lower() == "bearer" else None
        if not key:
            return None
        digest = _digest(key)
        return self._inline.get(digest) or self._from_file.get(digest)
