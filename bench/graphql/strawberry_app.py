"""The same schema with Strawberry on uvicorn: `uvicorn strawberry_app:app --port 8001`."""

from __future__ import annotations

import strawberry
from schema_data import AUTHORS, BOOKS
from strawberry.asgi import GraphQL


@strawberry.type
class Author:
    id: int
    name: str


@strawberry.type
class Book:
    id: int
    title: str
    author_id: strawberry.Private[int]

    @strawberry.field
    def author(self) -> Author:
        return Author(**AUTHORS[self.author_id])


@strawberry.type
class Query:
    @strawberry.field
    def books(self, first: int = 10) -> list[Book]:
        return [Book(**b) for b in BOOKS[:first]]


app = GraphQL(strawberry.Schema(query=Query), graphql_ide=None)
