"""``cello.eventsourcing``: events, aggregates, snapshots and event stores — built by issue 16.

The names exist so published apps import; using them raises ``FeatureNotAvailable``.
"""

from ._unavailable import FeatureNotAvailable, install

__all__ = [
    "FeatureNotAvailable",
    *install(globals(), 16, ["Event", "Aggregate", "Snapshot", "EventStore"], ["event_handler"]),
]
