"""Issue 11, items 4 and 5: sessions and CSRF. ``CELLO_TEST_SESSION_STORE`` picks the store
(cookie | memory | redis); ``CELLO_TEST_CSRF=1`` adds CSRF protection (``/hook`` exempt,
``https://admin.test`` trusted); ``CELLO_TEST_TRUSTED_PROXIES`` goes to ``set_trusted_proxies``.
The key comes from ``CELLO_SECRET_KEY`` (set by the tests) unless ``CELLO_TEST_SECRET`` is set."""

import os

from cello import App, Response, SessionConfig

app = App()
store = os.environ.get("CELLO_TEST_SESSION_STORE", "cookie")
secret = os.environ.get("CELLO_TEST_SECRET")
app.enable_session(SessionConfig(store=store, secret=secret, max_age=int(os.environ.get("CELLO_TEST_MAX_AGE", "3600"))))
if os.environ.get("CELLO_TEST_CSRF") == "1":
    app.enable_csrf(secret=secret, exempt_paths=["/hook"], trusted_origins=["https://admin.test"])
    app.enable_templates()
_proxies = os.environ.get("CELLO_TEST_TRUSTED_PROXIES")
if _proxies:
    app.set_trusted_proxies([p.strip() for p in _proxies.split(",")])


@app.get("/session")
def show(request):
    return {"session": request.session.to_dict(), "pid": os.getpid()}


@app.post("/login")
def login(request):
    request.session.regenerate()
    request.session["user"] = request.json()["user"]
    return {"ok": True}


@app.post("/logout")
def logout(request):
    request.session.clear()
    return {"ok": True}


@app.get("/whoami")
def whoami(request):
    user = request.session.get("user")
    if user is None:
        return Response.json({"detail": "not logged in"}, status=401)
    return {"user": user}


@app.get("/count")
def count(request):
    request.session["n"] = request.session.get("n", 0) + 1
    return {"n": request.session["n"], "pid": os.getpid()}


@app.get("/cart")
def cart(request):
    # In-place change of a nested value: saved only because modified is set.
    request.session.setdefault("cart", [])
    request.session["cart"].append(request.query.get("item", "x"))
    request.session.modified = True
    return {"cart": request.session["cart"]}


@app.get("/big")
def big(request):
    try:
        request.session["blob"] = "x" * int(request.query.get("n", "5000"))
    except ValueError as exc:
        return Response.json({"error": str(exc), "kept": request.session.to_dict()}, status=500)
    return {"ok": True}


@app.get("/token")
def token(request):
    return {
        "token": request.csrf_token(),
        "context": request.context.get("csrf_token"),
        "template": app.render_string("{{ csrf_token() }}", {"request": request}),
    }


@app.post("/submit")
def submit(request):
    return {"ok": True, "form": request.form() if request.is_form() or request.is_multipart() else None}


@app.post("/hook")
def hook(request):
    return {"hook": True}


if __name__ == "__main__":
    app.run()
