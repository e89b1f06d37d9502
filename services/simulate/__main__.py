"""`python -m services.simulate`: demo traffic for the gateway (`make simulate`, `make simulate DRIFT=1`)."""

from __future__ import annotations

import sys

from services.simulate.traffic import main

if __name__ == "__main__":
    sys.exit(main())
