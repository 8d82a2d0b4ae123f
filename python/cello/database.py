"""``cello.database``: SQL pools, transactions and Redis — built by issue 14.

The names exist so published apps import; using them raises ``FeatureNotAvailable``.
"""

from ._unavailable import FeatureNotAvailable, install

__all__ = ["FeatureNotAvailable", *install(globals(), 14, ["Database", "Transaction", "Redis"], ["transactional"])]
