"""The data both GraphQL bench apps serve: 50 books with authors (same work on each side)."""

from __future__ import annotations

AUTHORS = {i: {"id": i, "name": f"author {i}"} for i in range(10)}
BOOKS = [{"id": i, "title": f"book {i}", "author_id": i % 10} for i in range(50)]
QUERY = "query Books($n: Int!) { books(first: $n) { id title author { id name } } }"
