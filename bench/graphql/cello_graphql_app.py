"""Cello's GraphQL endpoint for the GraphQL-vs-Strawberry figure (see README.md here)."""

from __future__ import annotations

import dataclasses
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from cello import App, GraphQLConfig  # noqa: E402
from cello.graphql import Field, Query  # noqa: E402
from schema_data import AUTHORS, BOOKS  # noqa: E402


@dataclasses.dataclass
class Author:
    id: int
    name: str


@dataclasses.dataclass
class Book:
    id: int
    title: str
    author_id: int

    @Field
    def author(self) -> Author:
        return Author(**AUTHORS[self.author_id])


@Query
def books(info, first: int = 10) -> list[Book]:
    return [Book(**b) for b in BOOKS[:first]]


app = App()
app.enable_graphql(GraphQLConfig(playground=False, introspection=False))

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
