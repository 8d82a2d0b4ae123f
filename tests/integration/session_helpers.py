"""A hand-kept cookie jar for the session/CSRF tests: the session cookie is `Secure` by
default, which clients (rightly) do not send back over plain HTTP, so the tests carry the
cookies themselves and check every `Set-Cookie` they get."""

import httpx

SECRET = "0123456789abcdef0123456789abcdef-session-tests"


def set_cookies(resp: httpx.Response) -> dict[str, str]:
    """name → the full Set-Cookie line."""
    out = {}
    for line in resp.headers.get_list("set-cookie"):
        name = line.split("=", 1)[0].strip()
        out[name] = line
    return out


def value(line: str) -> str:
    return line.split(";", 1)[0].split("=", 1)[1]


def attrs(line: str) -> set[str]:
    return {a.strip() for a in line.split(";")[1:]}


class Jar:
    """Cookies kept from responses (deleted when `Max-Age=0`), sent as one Cookie header."""

    def __init__(self, server):
        self.server = server
        self.cookies: dict[str, str] = {}

    def header(self) -> dict[str, str]:
        return {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())} if self.cookies else {}

    def keep(self, resp: httpx.Response) -> httpx.Response:
        for name, line in set_cookies(resp).items():
            if "Max-Age=0" in line:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value(line)
        return resp

    def request(self, method: str, path: str, headers: dict | None = None, **kw) -> httpx.Response:
        h = {**self.header(), **(headers or {})}
        with httpx.Client(timeout=5) as c:
            return self.keep(c.request(method, self.server.url(path), headers=h, **kw))

    def get(self, path: str, **kw) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw) -> httpx.Response:
        return self.request("POST", path, **kw)
