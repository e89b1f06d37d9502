"""The orchestrator's routes, one module per area: `control` (POST /alerts, /retrain, /rollback: the
control token first) and `status` (GET /retrainings, /metrics, /health). `deps` reads what they need
from the app's state."""
