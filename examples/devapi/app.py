"""A bookshop API that uses the whole developer API: typed parameters, Depends (with teardown),
guards as dependencies, background tasks, lifespan and state, response models, OpenAPI with
offline docs, and templates.

    python examples/devapi/app.py            # http://127.0.0.1:8000/docs, /redoc, /ui
    cello openapi examples/devapi/app.py     # print the OpenAPI document
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import Annotated

from cello import (
    App,
    BackgroundTasks,
    Blueprint,
    Depends,
    Header,
    HTTPException,
    Query,
    Response,
)
from pydantic import BaseModel, Field

log = logging.getLogger("bookshop")
HERE = Path(__file__).resolve().parent


# ---- models --------------------------------------------------------------------------------


class BookIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    author: str = Field(min_length=1, max_length=100)
    price: float = Field(gt=0, le=10_000)
    tags: list[str] = Field(default=[], max_length=10)


class Book(BaseModel):
    id: int
    title: str
    author: str
    price: float
    tags: list[str]


class BookPage(BaseModel):
    items: list[Book]
    total: int
    next: str | None


# ---- the "database" and its session --------------------------------------------------------


class Store:
    """An in-memory store; a real app would hold a connection pool here."""

    def __init__(self) -> None:
        self.books: dict[int, dict] = {}
        self.audit: list[str] = []
        self.open_sessions = 0
        self._lock = threading.Lock()

    def add(self, data: dict) -> dict:
        with self._lock:
            book = {"id": max(self.books, default=0) + 1, **data}
            self.books[book["id"]] = book
            return book


@contextlib.asynccontextmanager
async def lifespan(app: App):
    store = Store()
    for title, author, price in (("Dune", "Frank Herbert", 9.5), ("Emma", "Jane Austen", 7.0)):
        store.add({"title": title, "author": author, "price": price, "tags": ["classic"]})
    app.state.store = store
    yield
    log.info("bookshop stopped with %d books", len(store.books))


app = App(lifespan=lifespan)
app.enable_openapi(title="Bookshop", version="1.0.0", description="The Cello developer API, end to end.")
app.enable_templates(HERE / "templates", globals={"shop": "Cello Books"})


def session():
    """A per-request unit of work: opened before the handler, closed after the response."""
    store: Store = app.state.store
    store.open_sessions += 1
    try:
        yield store
    finally:
        store.open_sessions -= 1


def api_key(x_api_key: Annotated[str | None, Header(description="`secret` for write access")] = None) -> str:
    if x_api_key != "secret":
        raise HTTPException(401, "a valid X-API-Key is required", headers={"WWW-Authenticate": "ApiKey"})
    return x_api_key


def pagination(limit: int = Query(10, ge=1, le=100), offset: int = Query(0, ge=0, le=1_000_000)) -> dict:
    return {"limit": limit, "offset": offset}


async def audit(store: Store, message: str) -> None:
    await asyncio.sleep(0)
    store.audit.append(message)


# ---- routes --------------------------------------------------------------------------------

api = Blueprint("/api/v1", name="api")


@api.get("/books", tags=["books"], response_model=BookPage)
def list_books(
    page: dict = Depends(pagination),
    author: str | None = Query(None, max_length=100),
    tag: list[str] = Query(default=[]),
    store: Store = Depends(session),
):
    """List books.

    Filter by author and tags; `limit`/`offset` paginate.
    """
    books = [b for b in store.books.values() if author is None or b["author"] == author]
    books = [b for b in books if all(t in b["tags"] for t in tag)]
    chunk = books[page["offset"] : page["offset"] + page["limit"]]
    more = page["offset"] + page["limit"] < len(books)
    next_url = app.url_for("list_books", limit=page["limit"], offset=page["offset"] + page["limit"]) if more else None
    return {"items": chunk, "total": len(books), "next": next_url}


@api.get("/books/{book_id:int}", tags=["books"])
def get_book(book_id: int, store: Store = Depends(session)) -> Book:
    """Fetch one book."""
    book = store.books.get(book_id)
    if book is None:
        raise HTTPException(404, f"no book {book_id}")
    return book


@api.post("/books", tags=["books"], status_code=201, response_model=Book, guards=[Depends(api_key)])
def create_book(book: BookIn, tasks: BackgroundTasks, store: Store = Depends(session)):
    """Add a book (needs `X-API-Key: secret`)."""
    created = store.add(book.model_dump())
    tasks.add_task(audit, store, f"created {created['id']}")
    return created


@api.delete("/books/{book_id:int}", tags=["books"], status_code=204, guards=[Depends(api_key)])
def delete_book(book_id: int, store: Store = Depends(session)):
    """Remove a book (needs `X-API-Key: secret`)."""
    if store.books.pop(book_id, None) is None:
        raise HTTPException(404, f"no book {book_id}")


@api.get("/audit", tags=["admin"], guards=[Depends(api_key)])
def audit_log(store: Store = Depends(session)) -> list[str]:
    """What the background tasks recorded."""
    return list(store.audit)


app.register_blueprint(api)


@app.get("/ui", summary="The shop as HTML", responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}})
def ui(store: Store = Depends(session)):
    return Response.template("books.html", {"books": list(store.books.values())})


if __name__ == "__main__":
    app.run()
