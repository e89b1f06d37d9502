"""`python -m services.s3init`: make sure the artifact bucket exists."""

from __future__ import annotations

import logging
import sys

from botocore.exceptions import BotoCoreError, ClientError

from contracts.logs import configure_logging
from contracts.settings import SettingsError
from services.s3init import Settings
from services.s3init.bucket import run

log = logging.getLogger("services.s3init")


def main() -> int:
    configure_logging("s3init")
    try:
        settings = Settings()  # type: ignore[call-arg]
        created = run(settings)
    except SettingsError as exc:
        print(f"create-bucket: error: invalid settings: {exc}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"create-bucket: error: {exc}", file=sys.stderr)
        return 1
    state = "created" if created else "exists"
    log.info("bucket %r %s at %s", settings.s3.bucket, state, settings.s3.endpoint_url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
