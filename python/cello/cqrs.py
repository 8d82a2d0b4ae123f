"""``cello.cqrs``: commands, queries and their buses — built by issue 16.

The names exist so published apps import; using them raises ``FeatureNotAvailable``.
"""

from ._unavailable import FeatureNotAvailable, install

__all__ = [
    "FeatureNotAvailable",
    *install(
        globals(),
        16,
        ["Command", "Query", "CommandResult", "QueryResult", "CommandBus", "QueryBus"],
        ["command_handler", "query_handler"],
    ),
]
