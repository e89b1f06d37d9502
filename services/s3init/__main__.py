"""`python -m services.s3init`: make sure the artifact bucket exists."""

from __future__ import annotations

import sys

from botocore.exceptions import BotoCoreError, ClientError

from contracts.settings import SettingsError
from services.s3init import Settings, run


def main() -> int:
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
    print(f"create-bucket: bucket {settings.s3.bucket!r} {state} at {settings.s3.endpoint_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
