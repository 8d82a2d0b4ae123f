"""An app exercising the OpenAPI generator: markers, models, blueprints, tags, docstrings."""

import enum
import uuid
from typing import Annotated

from cello import App, Blueprint, Body, Cookie, Depends, File, Form, Header, Query, Response
from pydantic import BaseModel, Field

app = App()
app.enable_openapi(title="Shop", version="2.1.0", description="A test shop", servers=["http://localhost:8000"])


class Color(str, enum.Enum):
    red = "red"
    blue = "blue"


class Tag(BaseModel):
    name: str


class ItemIn(BaseModel):
    name: str = Field(min_length=1, max_length=50)
    price: float = Field(gt=0)
    tags: list[Tag] = []


class ItemOut(BaseModel):
    id: int
    name: str
    price: float


def api_key(x_api_key: str = Header(description="the caller's key")):
    return x_api_key


@app.get("/items/{item_id:int}", tags=["items"])
def get_item(item_id: int, verbose: bool = False) -> ItemOut:
    """Fetch one item.

    Returns the item with that id.
    """
    return {"id": item_id, "name": "pen", "price": 1.5}


@app.get("/items", tags=["items"], summary="List items", response_model=list[ItemOut])
def list_items(
    limit: int = Query(10, ge=1, le=100),
    color: Color | None = None,
    ids: list[int] = Query(default=[]),
    q: Annotated[str | None, Query(max_length=20, pattern="^[a-z]*$")] = None,
):
    return [{"id": i, "name": "x", "price": 2.0} for i in range(min(limit, 3))]


@app.post("/items", tags=["items"], status_code=201, response_model=ItemOut, description="Create an item.")
def create_item(item: ItemIn, key: str = Depends(api_key)):
    return {"id": 1, "name": item.name, "price": item.price}


@app.put("/items/{item_id:int}/note", tags=["items"])
def note(item_id: int, text: str = Body(embed=True), session: str | None = Cookie(None)):
    return {"item_id": item_id, "text": text}


@app.post("/upload")
def upload(file=File(), title: str = Form()):
    return {"size": file.size(), "title": title}


@app.get("/things/{thing_id:uuid}", deprecated=True)
def thing(thing_id: uuid.UUID):
    return {"id": str(thing_id)}


@app.get("/hidden", include_in_schema=False)
def hidden():
    return {}


@app.get("/page", responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}})
def page():
    return Response.html("<p>hi</p>")


admin = Blueprint("/admin", name="admin")


@admin.delete("/items/{item_id:int}", tags=["admin"], status_code=204)
def delete_item(item_id: int):
    return None


app.register_blueprint(admin)

if __name__ == "__main__":
    app.run()
