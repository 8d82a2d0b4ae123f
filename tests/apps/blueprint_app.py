"""Blueprints nested with the published names (`register`), for tests/integration/test_blueprint_names.py."""

from cello import App, Blueprint

api = Blueprint("/api")
v1 = Blueprint("/v1")
users = Blueprint("/users", name="users")


@api.get("/status")
def status(request):
    return {"ok": True}


@v1.route("/items", methods=["GET", "POST"])
def items(request):
    return {"method": request.method}


@users.get("/{id:int}")
def user(request, id: int):
    return {"id": id}


v1.register(users)
api.register(v1)

app = App()
app.register_blueprint(api)

if __name__ == "__main__":
    app.run()
