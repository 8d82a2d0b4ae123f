"""``cello.graphql``: GraphQL schemas from Python functions and types, executed per the spec by
graphql-core, served by ``App.enable_graphql`` over HTTP and WebSocket.

``@Query`` / ``@Mutation`` / ``@Subscription`` mark resolvers (``info`` first, typed arguments,
a return annotation); ``Field`` marks computed fields of object types; ``Schema`` and
``GraphQL`` build schemas explicitly; ``DataLoader`` batches and caches per request.
"""

from ._dataloader import DataLoader
from ._engine import Field, GraphQL, Mutation, Query, Schema, Subscription

__all__ = ["DataLoader", "Field", "GraphQL", "Mutation", "Query", "Schema", "Subscription"]
