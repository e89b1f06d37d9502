"""What the gateway's supervisor (__main__.py) hands its worker (worker.py) in the environment.

The names live here, below both, so the worker does not import the supervisor that starts it (an
import cycle, refused by tests/static/test_imports.py).
"""

# Descriptors of the public listening socket, the metrics listening socket, and the pipe the worker
# writes `ready` on once every model's version is loaded.
LISTEN_FD, METRICS_FD, READY_FD = "GATEWAY_LISTEN_FD", "GATEWAY_METRICS_FD", "GATEWAY_READY_FD"
