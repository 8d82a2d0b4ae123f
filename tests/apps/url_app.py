"""Reports how it sees its own URL (root path tests) and echoes bodies (limit tests)."""

from cello import App

app = App()


@app.get("/where")
def where(request):
    return {"url": request.url, "root_path": request.root_path, "path": request.path}


@app.post("/echo")
def echo(request):
    return {"size": len(request.body())}


if __name__ == "__main__":
    app.run()
