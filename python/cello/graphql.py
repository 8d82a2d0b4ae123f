"""``cello.graphql``: a spec-compliant GraphQL engine — built by issue 17.

The names exist so published apps import; using them raises ``FeatureNotAvailable``.
"""

from ._unavailable import FeatureNotAvailable, install

__all__ = [
    "FeatureNotAvailable",
    *install(globals(), 17, ["Query", "Mutation", "Subscription", "Field", "DataLoader", "Schema", "GraphQL"]),
]
