"""Templates (minijinja): inheritance, includes, macros, filters, autoescape, url_for, reload."""

import os
import sys
from pathlib import Path

from cello import App, Response
from pydantic import BaseModel

HERE = Path(__file__).resolve().parent
# The reload test points the app at a scratch copy it edits.
TEMPLATE_DIR = os.environ.get("TEMPLATE_DIR", str(HERE / "templates_site"))

app = App()
app.enable_templates(TEMPLATE_DIR, globals={"site_name": "Cello <test>"})


class User(BaseModel):
    name: str
    email: str

    def greeting(self, word: str) -> str:
        return f"{word}, {self.name}"


@app.get("/", name="home")
def home(name: str = "world"):
    return Response.template("home.html", {"name": name, "items": ["a", "b"], "count": 2, "note": "<b>bold?</b>"})


@app.get("/users/{user_id:int}", name="user_page")
def user_page(user_id: int):
    user = User(name=f"user{user_id}", email=f"u{user_id}@example.com")
    return Response.template("user.html", {"user": user}, status=200)


@app.get("/plain")
def plain(value: str = "<x>"):
    # .txt templates are not escaped.
    return Response.text(app.render("plain.txt", {"value": value}))


@app.get("/string")
def string(value: str = "<x>"):
    return {"out": app.render_string("{{ value }}|{{ value|safe }}", {"value": value})}


@app.get("/csrf")
def csrf(request):
    request.context["csrf_token"] = "tok123"
    return Response.template("form.html", {"request": request})


@app.get("/missing")
def missing():
    return Response.template("nope.html")


@app.get("/created")
def created():
    return Response.template("plain.txt", {"value": "v"}, status=201)


if __name__ == "__main__":
    print("python", sys.version, flush=True)
    app.run()
