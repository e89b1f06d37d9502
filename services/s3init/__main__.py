"""`python -m services.s3init`: make sure the artifact bucket exists."""

from __future__ import annotations

import sys

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import ValidationError

from services.s3init import Settings
from services.s3init.bucket import run


def main() -> int:
    try:
        settings = Settings()  # type: ignore[call-arg]
        created = run(settings)
    except ValidationError as exc:
        print(f"create-bucket: error: missing setting: {exc.errors()[0]['loc'][0]}", file=sys.stderr)
        return 1
    except (BotoCoreError, ClientError) as exc:
        print(f"create-bucket: error: {exc}", file=sys.stderr)
        return 1
    state = "created" if created else "exists"
    print(f"create-bucket: bucket {settings.bucket!r} {state} at {settings.endpoint_url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
