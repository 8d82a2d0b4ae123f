"""Response models and default status codes, served for the black-box tests."""

import dataclasses

from cello import App, Response
from pydantic import BaseModel, Field

app = App()


class UserOut(BaseModel):
    id: int
    name: str


class UserIn(UserOut):
    password: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Aliased(BaseModel):
    user_name: str = Field(alias="userName")


@app.get("/model", response_model=UserOut)
def model():
    # Extra keys (the password) never reach the client.
    return {"id": 1, "name": "ann", "password": "secret"}


@app.get("/annotation")
def annotation() -> UserOut:
    return UserIn(id=2, name="bob", password="secret")


@app.get("/list", response_model=list[UserOut])
def many():
    return [{"id": i, "name": f"u{i}", "password": "x"} for i in range(3)]


@app.get("/dataclass")
def dc() -> Point:
    return {"x": 1, "y": 2, "z": 3}


@app.get("/alias", response_model=Aliased)
def alias():
    return {"userName": "zed"}


@app.post("/created", status_code=201, response_model=UserOut)
def created():
    return {"id": 3, "name": "cy", "password": "p"}


@app.delete("/gone", status_code=204)
def gone():
    return None


@app.get("/tuple", response_model=UserOut, status_code=201)
def tuple_status():
    # An explicit (body, status) wins over the route's status_code; the body is still filtered.
    return {"id": 4, "name": "di", "password": "p"}, 202


@app.get("/response", response_model=UserOut)
def response():
    return Response.text("as is", status=200)


@app.get("/invalid", response_model=UserOut)
def invalid():
    return {"id": "not a number"}


@app.get("/obj", response_model=UserOut)
def obj():
    class Row:
        id = 5
        name = "orm"
        secret = "x"

    return Row()


if __name__ == "__main__":
    app.run()
