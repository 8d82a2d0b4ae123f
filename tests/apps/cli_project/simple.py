"""A module whose App is called `app` (the default attribute)."""

from cello import App

app = App()
not_an_app = 42


@app.get("/simple")
def simple(request):
    return {"simple": True}
