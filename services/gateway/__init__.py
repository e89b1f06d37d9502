"""The prediction gateway: one front door for every served model.

It validates requests against the production version's signature, forwards them to the serving
containers (MLflow scoring protocol), measures what goes through (Prometheus metrics) and appends
every prediction, and every feedback value it matches there, to the prediction log in Postgres.
Everything but the forwarding itself happens off the request path. It keeps no state another
replica would need: run as many as the load asks for (docs/serving.md, "Gateway replicas"); drift
and live quality are the monitor's, from the log. Metric names are the contract in docs/monitoring.md.
"""

from __future__ import annotations

from services.gateway.settings import Settings, load_settings

__all__ = ["Settings", "load_settings"]
