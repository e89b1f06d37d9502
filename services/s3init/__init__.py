"""Create the artifact bucket if it is missing (idempotent, retries while the store starts).

The job is bucket.py (the check-then-create is shared with backup: services/common/s3.py); this file
holds the settings only.
"""

from __future__ import annotations

from services.s3init.settings import Settings

__all__ = ["Settings"]
