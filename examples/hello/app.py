"""The smallest Cello app: `make run` serves it on http://127.0.0.1:8000."""

from cello import App, Response

app = App()


@app.get("/")
def index(request):
    return {"message": "Hello, World!"}


@app.get("/plaintext")
def plaintext(request):
    return Response.text("Hello, World!")


@app.get("/users/{id:int}")
def user(request):
    return {"id": int(request.params["id"])}


@app.post("/echo")
def echo(request):
    return request.json()


@app.get("/hello/{name}")
async def hello(request):
    return {"hello": request.params["name"]}


if __name__ == "__main__":
    app.run()
