"""A package-style app found through `[tool.cello] app` in ../pyproject.toml."""

import os

from cello import App, Blueprint
from cello.guards import Authenticated

from .helpers import greeting

application = App()
admin = Blueprint("/admin")


@application.get("/hello")
def hello(request):
    return {"hello": greeting(), "pid": os.getpid()}


@admin.delete("/users/{user_id}", guards=[Authenticated()])
def delete_user(request, user_id: int):
    return {"deleted": user_id}


application.register_blueprint(admin)
