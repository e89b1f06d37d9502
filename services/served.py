"""The registry contract between the serving launcher and the gateway: which version answers.

The launcher writes, on the registered model, tag `served.<alias>` = the version its model server
answers with (after a rollout completes), and `served.<alias>.error` while a newer version named by
the alias cannot start. The gateway labels and checks requests by `served.<alias>`.
"""

from __future__ import annotations


def served_tag(alias: str) -> str:
    """The registered-model tag naming the version served for `alias`."""
    return f"served.{alias}"


def served_error_tag(alias: str) -> str:
    """The registered-model tag saying why the alias's version is not the one served."""
    return f"{served_tag(alias)}.error"
