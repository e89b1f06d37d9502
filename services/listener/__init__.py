"""The gateway's socket listener: `python -m services.listener` (__main__.py).

It holds the gateway's listening sockets across gateway restarts and recreations; the hand-over
protocol it speaks is services/common/sockets.py, shared with the gateway.
"""

from services.common.sockets import hand_over, listen, parse, receive

__all__ = ["hand_over", "listen", "parse", "receive"]
