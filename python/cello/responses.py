"""``Response``: what a handler returns when it wants control over the answer.

The Rust side reads a response through ``_cello_parts()`` only:
``(status, headers, kind, payload)`` where kind 0 is a bytes body (or ``None``),
1 a file ``(path, content_type, filename, range_header, ranged)`` streamed from
disk by Rust, and 2 a sync or async iterable of ``str``/``bytes`` chunks.

What Python shows (``status``, ``headers``, ``content_length()``, ``body()``) is
what the client receives; for files the size, ``Content-Range`` and the 206/416
status are computed from the file on disk when asked, and Rust computes them
again when it opens the file.
"""

from __future__ import annotations

import dataclasses
import email.utils
import enum
import mimetypes
import os
import re
import time
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from datetime import date, datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape as _xml_escape
from xml.sax.saxutils import quoteattr as _xml_quoteattr

from ._cello import dumps as _dumps

__all__ = ["Headers", "Response"]

# RFC 9110 token: header names and cookie names.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# Control characters other than HTAB: never valid in a header value (CR/LF/NUL would split it).
_CTL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# RFC 6265 cookie-value: cookie-octets, optionally wrapped in double quotes.
_COOKIE_OCTETS = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"
_COOKIE_VALUE = re.compile(f'^(?:{_COOKIE_OCTETS}|"{_COOKIE_OCTETS}")$')
# Characters a cookie attribute value (Path, Domain, Expires) may not contain.
_COOKIE_ATTR_BAD = re.compile(r"[\x00-\x1f\x7f;]")
_SAMESITE = {"strict": "Strict", "lax": "Lax", "none": "None"}
_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
# Characters kept as they are when a URL is made safe for a Location header.
_URL_SAFE = "!#$%&'()*+,/:;=?@[]~"
# Built-in table only, so the guess does not depend on the machine's /etc/mime.types.
_MIME = mimetypes.MimeTypes()
_JSON = "application/json"
_TEXT = "text/plain; charset=utf-8"
_HTML = "text/html; charset=utf-8"
_OCTET = "application/octet-stream"
_XML = "application/xml"
_object_new = object.__new__
# The `content-type` pairs of the constructors' hot path: shared (a tuple is immutable; each
# response still gets its own list).
_CT = {t: ("content-type", t) for t in (_JSON, _TEXT, _HTML, _OCTET)}
_CT_TEXT = _CT[_TEXT]
_CT_JSON = _CT[_JSON]
_KNOWN_TYPES = frozenset({_JSON, _TEXT, _HTML, _OCTET, _XML, "text/event-stream", "application/problem+json"})


# Header names that passed the checks below (bounded): a name set on every response is
# checked once, not per response.
_VALID_NAMES: set[str] = set()


def _check_header(key: Any, value: Any) -> tuple[str, str]:
    key, value = str(key), str(value)
    known = key in _VALID_NAMES
    # A printable value holds no control character (CR, LF and NUL included): the scans
    # below only run for the others (tabs, non-ASCII spaces, ...).
    printable = value.isprintable()
    if (not known and ("\r" in key or "\n" in key or "\0" in key)) or (
        not printable and ("\r" in value or "\n" in value or "\0" in value)
    ):
        raise ValueError("header names and values cannot contain CR, LF or NUL")
    if not known:
        if not _TOKEN.match(key):
            raise ValueError(f"invalid header name {key!r}")
        if len(_VALID_NAMES) < 512:
            _VALID_NAMES.add(key)
    if not printable and _CTL.search(value):
        raise ValueError(f"header {key} contains a control character")
    return key, value


def _http_date(when: datetime | date | float | timedelta | str) -> str:
    """An IMF-fixdate. ``int``/``float``/``timedelta`` are relative to now (seconds);
    naive datetimes are taken as UTC; strings are used as given."""
    if isinstance(when, str):
        if _COOKIE_ATTR_BAD.search(when):
            raise ValueError("expires cannot contain ';' or control characters")
        return when
    if isinstance(when, bool):
        raise TypeError("expires must be a datetime, date, timedelta, number of seconds or string")
    if isinstance(when, timedelta):
        when = when.total_seconds()
    if isinstance(when, (int, float)):
        return email.utils.formatdate(time.time() + when, usegmt=True)
    if isinstance(when, datetime):
        dt = when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)
        return email.utils.format_datetime(dt, usegmt=True)
    if isinstance(when, date):
        return email.utils.format_datetime(datetime(when.year, when.month, when.day, tzinfo=timezone.utc), usegmt=True)
    raise TypeError("expires must be a datetime, date, timedelta, number of seconds or string")


def _cookie_identity(header_value: str) -> tuple[str, str, str]:
    """(name, path, domain) of a Set-Cookie value: a browser keeps one cookie per triple."""
    parts = header_value.split(";")
    name = parts[0].split("=", 1)[0].strip()
    path, domain = "", ""
    for p in parts[1:]:
        k, _, v = p.strip().partition("=")
        if k.lower() == "path":
            path = v
        elif k.lower() == "domain":
            domain = v.lower().lstrip(".")
    return name, path, domain


def _safe_url(url: Any) -> str:
    url = str(url)
    if _CTL.search(url):
        raise ValueError("a redirect URL cannot contain CR, LF, NUL or other control characters")
    return urllib.parse.quote(url, safe=_URL_SAFE)


def _content_disposition(filename: str) -> str:
    ascii_name = "".join(c if c.isascii() and c.isprintable() and c not in ' "\\' else "_" for c in filename)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"


_FILE_NOT_FOUND = {"type": "about:blank", "title": "Not Found", "status": 404, "detail": "file not found"}


def _resolve_under(root: str | os.PathLike, path: str) -> str | None:
    """``path`` (relative to ``root``, or absolute) with symlinks resolved, or ``None``
    when it is not inside ``root`` (also resolved) or cannot be a file name (NUL)."""
    try:
        base = os.path.realpath(os.fsdecode(os.fspath(root)))
        full = os.path.realpath(os.path.join(base, path))
    except (ValueError, OSError):  # NUL in the name, or a symlink loop
        return None
    if full == base or os.path.commonpath([base, full]) != base:
        return None
    return full


def _u64(text: str) -> int | None:
    if not re.fullmatch(r"\+?[0-9]+", text):
        return None
    value = int(text)
    return value if value < 2**64 else None


def parse_range(header: str | None, length: int) -> tuple[int, int] | None | bool:
    """Resolve a ``Range`` header against a file length, exactly as the Rust file server does.

    ``True``: serve the whole file (no header, or a multi-range request); ``(start, end)``
    inclusive: 206; ``None``: unsatisfiable or malformed, 416.
    """
    if header is None:
        return True
    h = header.strip()
    if not h.startswith("bytes="):
        return None
    spec = h[len("bytes=") :]
    if "," in spec:
        return True
    a, sep, b = spec.strip().partition("-")
    if not sep:
        return None
    a, b = a.strip(), b.strip()
    last = max(length - 1, 0)
    parsed: tuple[int, int] | None
    if not a:
        n = _u64(b)
        parsed = None if not n else (max(length - n, 0), last)
    else:
        start = _u64(a)
        if start is None:
            parsed = None
        elif b == "":
            parsed = (start, last)
        else:
            end = _u64(b)
            parsed = None if end is None or end < start else (start, min(end, last))
    if parsed is not None and length > 0 and parsed[0] < length and parsed[0] <= parsed[1]:
        return parsed
    return None


class Headers(MutableMapping[str, str]):
    """A live, case-insensitive, multi-valued view of a response's headers.

    ``headers["X"]`` joins repeated values with ``", "`` (the first one for
    ``Set-Cookie``); ``get_list``/``multi_items`` give every value. Setting an item
    replaces every header of that name and is validated like ``set_header``.
    """

    __slots__ = ("_resp",)

    def __init__(self, resp: Response) -> None:
        self._resp = resp

    def multi_items(self) -> list[tuple[str, str]]:
        return self._resp._all_headers()

    def get_list(self, key: str) -> list[str]:
        low = key.lower()
        return [v for k, v in self._resp._all_headers() if k.lower() == low]

    getlist = get_list

    def add(self, key: str, value: str) -> None:
        """Append a header without replacing others of the same name."""
        self._resp._headers.append(_check_header(key, value))

    def __getitem__(self, key: str) -> str:
        values = self.get_list(key)
        if not values:
            raise KeyError(key)
        return values[0] if key.lower() == "set-cookie" else ", ".join(values)

    def __setitem__(self, key: str, value: str) -> None:
        self._resp.set_header(key, value)

    def __delitem__(self, key: str) -> None:
        if not self._resp.remove_header(key):
            raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and bool(self.get_list(key))

    def __iter__(self) -> Iterator[str]:
        seen: set[str] = set()
        for k, _ in self._resp._all_headers():
            if k.lower() not in seen:
                seen.add(k.lower())
                yield k

    def __len__(self) -> int:
        return len({k.lower() for k, _ in self._resp._all_headers()})

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            mine = {k.lower(): v for k, v in self.items()}
            return mine == {str(k).lower(): v for k, v in other.items()}
        return NotImplemented

    def __repr__(self) -> str:
        return f"Headers({self.multi_items()!r})"


class Response:
    """An HTTP response: ``Response(body=None, status=None, headers=None, content_type=None)``.

    ``body`` may be ``str`` (sent as UTF-8, ``text/plain`` unless told otherwise),
    ``bytes`` (``application/octet-stream`` unless told otherwise), ``None`` (no
    body) or anything the JSON encoder accepts (``application/json``).
    """

    __slots__ = ("_body", "_file", "_headers", "_kind", "_payload", "_status")

    def __init__(
        self,
        body: Any = None,
        status: int | None = None,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        content_type: str | None = None,
    ) -> None:
        self._status: int | None = None
        self._headers: list[tuple[str, str]] = []
        self._kind = 0
        self._payload: Any = None
        self._file: tuple[str, str | None, bool] | None = None  # (path, range header, ranged)
        if status is not None:
            self.status = status
        if isinstance(body, str):
            body = body.encode()
            content_type = content_type or _TEXT
        elif isinstance(body, (bytes, bytearray, memoryview)):
            body = bytes(body)
            content_type = content_type or _OCTET
        elif body is not None:
            body = _dumps(body)
            content_type = content_type or _JSON
        self._body: bytes | None = body
        if content_type:
            if content_type in _KNOWN_TYPES:  # skip the check on the hot path
                self._headers.append(("content-type", content_type))
            else:
                self._headers.append(_check_header("content-type", content_type))
        if headers:
            if isinstance(headers, Headers):
                items: Iterable[tuple[str, str]] = headers.multi_items()
            else:
                items = headers.items() if isinstance(headers, Mapping) else headers
            for k, v in items:
                if str(k).lower() == "set-cookie":
                    self.add_header(k, v)  # several cookies, several headers
                else:
                    self.set_header(k, v)

    # ---- status and headers ----------------------------------------------------------------
    @property
    def status(self) -> int:
        if self._status is not None:
            return self._status
        if self._kind == 1:
            return self._file_state()[0]
        return 200

    @status.setter
    def status(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):  # http.HTTPStatus is an int
            raise TypeError(f"status must be an int, not {type(value).__name__}")
        if not 100 <= value <= 999:
            raise ValueError(f"{value} is not a valid HTTP status code")
        self._status = int(value)

    @property
    def status_code(self) -> int:
        """Alias of ``status`` (Starlette/httpx habit)."""
        return self.status

    @property
    def headers(self) -> Headers:
        return Headers(self)

    def set_header(self, key: str, value: str) -> None:
        """Set a header, replacing any of the same name. CR, LF, NUL → ``ValueError``."""
        # What `_check_header` passes without a change, decided without its frame: a name
        # already checked and a printable value (no control character), both plain `str`.
        if not (type(key) is str and type(value) is str and key in _VALID_NAMES and value.isprintable()):
            key, value = _check_header(key, value)
        low = key.lower()
        headers = [kv for kv in self._headers if kv[0].lower() != low]
        headers.append((key, value))
        self._headers = headers

    def add_header(self, key: str, value: str) -> None:
        """Add a header, keeping others of the same name."""
        self._headers.append(_check_header(key, value))

    def get_header(self, key: str, default: str | None = None) -> str | None:
        values = self.headers.get_list(key)
        return values[0] if values else default

    def remove_header(self, key: str) -> bool:
        low = str(key).lower()
        before = len(self._headers)
        self._headers = [(k, v) for k, v in self._headers if k.lower() != low]
        return len(self._headers) != before

    # ---- cookies ---------------------------------------------------------------------------
    def set_cookie(
        self,
        name: str,
        value: str = "",
        *,
        max_age: int | timedelta | None = None,
        expires: datetime | date | float | timedelta | str | None = None,
        path: str | None = "/",
        domain: str | None = None,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = "lax",
    ) -> None:
        """Add a ``Set-Cookie`` header (RFC 6265).

        ``value`` must consist of cookie-octets (no space, ``"``, ``,``, ``;`` or
        ``\\``): encode other data first, e.g. with ``urllib.parse.quote``.
        ``expires``: a datetime (naive = UTC), a date, a number of seconds or a
        timedelta from now, or a ready HTTP date string. ``samesite``: ``"strict"``,
        ``"lax"``, ``"none"`` (case-insensitive) or ``None`` to omit the attribute;
        ``"none"`` requires ``secure=True`` because browsers drop such cookies
        otherwise. Setting a cookie again with the same name, path and domain
        replaces the earlier header.
        """
        name = str(name)
        if not _TOKEN.match(name):
            raise ValueError(f"invalid cookie name {name!r}")
        value = "" if value is None else str(value)
        if not _COOKIE_VALUE.match(value):
            raise ValueError(
                f"invalid value for cookie {name}: only printable ASCII without space, '\"', ',', ';' or '\\' "
                "(encode it first, e.g. with urllib.parse.quote)"
            )
        parts = [f"{name}={value}"]
        if expires is not None:
            parts.append(f"Expires={_http_date(expires)}")
        if max_age is not None:
            if isinstance(max_age, timedelta):
                max_age = int(max_age.total_seconds())
            if isinstance(max_age, bool) or not isinstance(max_age, int):
                raise TypeError("max_age must be an int number of seconds or a timedelta")
            parts.append(f"Max-Age={max_age}")
        if domain:
            if _COOKIE_ATTR_BAD.search(domain) or " " in domain or "," in domain:
                raise ValueError(f"invalid cookie domain {domain!r}")
            parts.append(f"Domain={domain}")
        if path:
            if _COOKIE_ATTR_BAD.search(path):
                raise ValueError(f"invalid cookie path {path!r}")
            parts.append(f"Path={path}")
        if name.startswith("__Secure-") and not secure:
            raise ValueError("a cookie named __Secure-* must be set with secure=True")
        if name.startswith("__Host-") and (not secure or domain or path != "/"):
            raise ValueError("a cookie named __Host-* needs secure=True, path='/' and no domain")
        if secure:
            parts.append("Secure")
        if httponly:
            parts.append("HttpOnly")
        if samesite is not None:
            site = _SAMESITE.get(str(samesite).lower())
            if site is None:
                raise ValueError(f"samesite must be 'strict', 'lax', 'none' or None, not {samesite!r}")
            if site == "None" and not secure:
                raise ValueError("samesite='none' requires secure=True (browsers reject it otherwise)")
            parts.append(f"SameSite={site}")
        header = "; ".join(parts)
        ident = _cookie_identity(header)
        self._headers = [(k, v) for k, v in self._headers if k.lower() != "set-cookie" or _cookie_identity(v) != ident]
        self._headers.append(("set-cookie", header))

    def delete_cookie(
        self,
        name: str,
        path: str | None = "/",
        domain: str | None = None,
        *,
        secure: bool = False,
        httponly: bool = False,
        samesite: str | None = None,
    ) -> None:
        """Expire a cookie in the browser (``Max-Age=0`` and an ``Expires`` in 1970).
        ``path`` and ``domain`` must match those the cookie was set with."""
        secure = secure or name.startswith(("__Secure-", "__Host-"))
        if samesite is not None and str(samesite).lower() == "none":
            secure = True
        self.set_cookie(
            name,
            "",
            max_age=0,
            expires=_EPOCH,
            path=path,
            domain=domain,
            secure=secure,
            httponly=httponly,
            samesite=samesite,
        )

    # ---- body ------------------------------------------------------------------------------
    def body(self) -> bytes:
        """The body bytes. A file response reads (the requested part of) the file; a
        streaming response gives ``b""`` (its body is produced while sending)."""
        if self._kind == 0:
            return self._body or b""
        if self._kind == 1:
            status, start, count, _ = self._file_state()
            if status not in (200, 206) or count is None:
                return b""
            assert self._file is not None
            with open(self._file[0], "rb") as f:
                f.seek(start)
                return f.read(count)
        return b""

    def content_type(self) -> str | None:
        return self.get_header("content-type")

    def content_length(self) -> int | None:
        """Length of the body in bytes; ``None`` for a streaming response or a missing file."""
        if self._kind == 0:
            return len(self._body or b"")
        if self._kind == 1:
            return self._file_state()[2]
        return None

    @property
    def is_streaming(self) -> bool:
        return self._kind != 0

    # ---- what Rust reads -------------------------------------------------------------------
    def _all_headers(self) -> list[tuple[str, str]]:
        if self._kind != 1:
            return list(self._headers)
        status, start, count, length = self._file_state()
        extra: list[tuple[str, str]] = []
        if status == 416 and length is not None:
            extra.append(("content-range", f"bytes */{length}"))
        elif count is not None and length is not None:
            extra.append(("content-length", str(count)))
            extra.append(("accept-ranges", "bytes"))
            if status == 206:
                extra.append(("content-range", f"bytes {start}-{start + count - 1}/{length}"))
        return [*self._headers, *extra]

    def _file_state(self) -> tuple[int, int, int | None, int | None]:
        """(status, start, count, file length) for a file response, from the file on disk."""
        assert self._file is not None
        path, range_header, ranged = self._file
        try:
            st = os.stat(path)
        except OSError:
            return 404, 0, None, None
        if not os.path.isfile(path):
            return 404, 0, None, None
        length = st.st_size
        if not ranged:
            return 200, 0, length, length
        spec = parse_range(range_header, length)
        if spec is True:
            return 200, 0, length, length
        if spec is None:
            return 416, 0, None, length
        return 206, spec[0], spec[1] - spec[0] + 1, length

    def _cello_parts(self) -> tuple[int, list[tuple[str, str]], int, Any]:
        if self._kind == 0:
            return (200 if self._status is None else self._status), self._headers, 0, self._body
        if self._kind == 1:
            assert self._file is not None
            path, range_header, ranged = self._file
            content_type = None
            headers = []
            for k, v in self._headers:
                if k.lower() == "content-type":
                    content_type = v  # Rust sets it on the file response itself
                else:
                    headers.append((k, v))
            status = 200 if self._status is None else self._status
            return status, headers, 1, (path, content_type, None, range_header, bool(ranged))
        return (200 if self._status is None else self._status), self._headers, self._kind, self._payload

    def __repr__(self) -> str:
        kind = ("", " file", " stream")[self._kind]
        return f"<Response [{self.status}]{kind} {self.content_type() or ''}>".replace(" >", ">")

    # ---- constructors ----------------------------------------------------------------------
    @classmethod
    def _bytes(cls, body: bytes, content_type: str, status: int | None) -> Response:
        """What ``cls(body, status=status, content_type=content_type)`` builds for ``bytes``
        and a known content type, without ``__init__``'s checks (the hot path of the
        constructors below). Subclasses keep their own ``__init__``."""
        if cls is not Response:
            return cls(body, status=status, content_type=content_type)
        self = _object_new(cls)
        self._status = None
        self._headers = [_CT.get(content_type) or ("content-type", content_type)]
        self._kind = 0
        self._payload = None
        self._file = None
        self._body = body
        if status is not None:
            self.status = status
        return self

    @classmethod
    def json(cls, data: Any, status: int | None = None) -> Response:
        if cls is not Response or status is not None:
            return cls._bytes(_dumps(data), _JSON, status)
        # `_bytes` inlined for the commonest case, as in `text` (one Python frame less).
        self = _object_new(Response)
        self._status = None
        self._headers = [_CT_JSON]
        self._kind = 0
        self._payload = None
        self._file = None
        self._body = _dumps(data)
        return self

    @classmethod
    def text(cls, content: Any, status: int | None = None) -> Response:
        if cls is not Response or status is not None:
            return cls._bytes(str(content).encode(), _TEXT, status)
        # `_bytes` inlined for the commonest case (issue 19: a `str` body is the cheapest
        # response there is): one Python frame less.
        self = _object_new(Response)
        self._status = None
        self._headers = [_CT_TEXT]
        self._kind = 0
        self._payload = None
        self._file = None
        self._body = (content if type(content) is str else str(content)).encode()
        return self

    @classmethod
    def html(cls, content: Any, status: int | None = None) -> Response:
        return cls._bytes(str(content).encode(), _HTML, status)

    @classmethod
    def template(
        cls, name: str, context: Any = None, status: int = 200, headers: dict[str, str] | None = None
    ) -> Response:
        """HTML rendered from template ``name`` by the app's engine (``app.enable_templates``)."""
        from .templating import default_engine

        resp = cls(default_engine().render(name, context).encode(), status=status, content_type=_HTML)
        for k, v in (headers or {}).items():
            resp.set_header(k, v)
        return resp

    @classmethod
    def binary(cls, data: bytes, content_type: str | None = None, status: int | None = None) -> Response:
        return cls(bytes(data), status=status, content_type=content_type or _OCTET)

    @classmethod
    def _from_file(
        cls,
        path: str | os.PathLike,
        content_type: str | None,
        range_header: str | None,
        ranged: bool,
        root: str | os.PathLike | None = None,
    ) -> Response:
        r = cls()
        path = os.fspath(path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if root is not None:
            resolved = _resolve_under(root, path)
            if resolved is None:
                # The same answer as a missing file: nothing tells what exists outside.
                return cls(_dumps(_FILE_NOT_FOUND), status=404, content_type="application/problem+json")
            path = resolved
        if content_type is None:
            content_type = _MIME.guess_type(path, strict=False)[0] or _OCTET
        r._headers.append(_check_header("content-type", content_type))
        r._kind = 1
        r._file = (path, range_header, ranged)
        return r

    @classmethod
    def file(
        cls,
        path: str | os.PathLike,
        filename: str | None = None,
        content_type: str | None = None,
        root: str | os.PathLike | None = None,
    ) -> Response:
        """Stream a file from disk (never read whole). With ``filename`` the browser is
        told to download it (``Content-Disposition: attachment``). The type is guessed
        from the path when not given. A missing file answers 404.

        With ``root``, a relative ``path`` is taken inside ``root`` and any path that
        leaves it once symlinks are resolved (``..``, an absolute path, a link pointing
        out) answers 404 problem+json, never the file: ``Response.file(rest, root=ROOT)``
        is the safe way to serve a ``{rest:path}`` parameter. Only regular files are
        served (a FIFO, device or directory is a 404)."""
        r = cls._from_file(path, content_type, None, False, root)
        if filename is not None and r._kind == 1:
            r._headers.append(("content-disposition", _content_disposition(str(filename))))
        return r

    @classmethod
    def sendfile(
        cls, path: str | os.PathLike, content_type: str | None = None, root: str | os.PathLike | None = None
    ) -> Response:
        """Stream a file from disk to be shown inline (``root`` as for ``file``)."""
        return cls._from_file(path, content_type, None, False, root)

    @classmethod
    def file_range(
        cls,
        path: str | os.PathLike,
        range_header: str | None,
        content_type: str | None = None,
        root: str | os.PathLike | None = None,
    ) -> Response:
        """Serve the part of a file a ``Range`` header asks for: 206 with ``Content-Range``,
        416 for an unsatisfiable or malformed range, 200 (whole file) without a header
        (``root`` as for ``file``)."""
        return cls._from_file(path, content_type, None if range_header is None else str(range_header), True, root)

    @classmethod
    def redirect(cls, url: str, permanent: bool | None = None, status: int | None = None) -> Response:
        """302 (default), 301 with ``permanent=True``, or ``status`` (301, 302, 303, 307, 308).
        Non-ASCII characters and spaces in ``url`` are percent-encoded; CR/LF → ValueError."""
        if status is None:
            status = 301 if permanent else 302
        elif status not in (300, 301, 302, 303, 304, 305, 307, 308):
            raise ValueError(f"{status} is not a redirect status")
        r = cls(status=status)
        r._headers.append(("location", _safe_url(url)))
        return r

    @classmethod
    def no_content(cls) -> Response:
        return cls(status=204)

    @classmethod
    def created(cls, data: Any = None, location: str | None = None) -> Response:
        r = cls(status=201) if data is None else cls(_dumps(data), status=201, content_type=_JSON)
        if location is not None:
            r._headers.append(("location", _safe_url(location)))
        return r

    @classmethod
    def xml(cls, data: Any, status: int | None = None, root_name: str | None = None) -> Response:
        """XML from a dict/list (element per key, ``<item>`` per list element, text
        escaped); ``str``/``bytes`` are sent as they are. See ``to_xml``."""
        if isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
        elif isinstance(data, str):
            body = data.encode()
        else:
            body = to_xml(data, root_name or "root").encode()
        return cls(body, status=status, content_type=_XML)

    @classmethod
    def stream(
        cls, iterable: Any, content_type: str = "text/plain; charset=utf-8", status: int | None = None
    ) -> Response:
        """Stream chunks (``str``/``bytes``) from a sync or async iterable, with back-pressure."""
        if not (hasattr(iterable, "__aiter__") or hasattr(iterable, "__iter__") or hasattr(iterable, "__next__")):
            raise TypeError(f"stream() needs an iterable or async iterable, not {type(iterable).__name__}")
        if isinstance(iterable, (str, bytes, bytearray)):
            iterable = [iterable]
        r = cls(status=status, content_type=content_type)
        r._kind = 2
        r._payload = iterable
        return r

    @classmethod
    def sse(cls, events: Any, status: int | None = None, heartbeat: float | None = 15.0) -> Response:
        """A ``text/event-stream`` of Server-Sent Events. ``events`` is a sync or async
        iterable (or an ``SseStream``) of ``SseEvent``s, dicts (``{"data": ..., "event":
        ..., "id": ..., "retry": ...}``; other dicts are sent as JSON data) or strings.
        ``heartbeat``: seconds of silence (async sources) after which a ``: keep-alive``
        comment is sent; ``None`` or 0 sends none. Never compressed or buffered: the body is
        written as events come, and the client leaving cancels the generator at once."""
        from .sse import sse_chunks

        r = cls.stream(sse_chunks(events, heartbeat), content_type="text/event-stream", status=status)
        r._headers.append(("cache-control", "no-cache"))
        r._headers.append(("x-accel-buffering", "no"))  # tell nginx-style proxies not to buffer
        return r


# ---- XML ------------------------------------------------------------------------------------

_XML_NAME = re.compile(r"^[^\W\d][\w.\-]*$")
_XML_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, (datetime, date)):
        value = value.isoformat()
    elif isinstance(value, enum.Enum):
        value = value.value
    elif isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", errors="replace")
    # Characters XML 1.0 cannot carry even escaped become U+FFFD.
    return _xml_escape(_XML_BAD_CHARS.sub("\ufffd", str(value)))


def _xml_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)
    if callable(dump) and not isinstance(value, type):
        return dump()
    return value


def _xml_element(tag: Any, value: Any, out: list[str]) -> None:
    tag = str(tag)
    if _XML_NAME.match(tag):
        open_tag, close_tag = tag, tag
    else:  # not a valid element name (e.g. "1", "a b"): keep the key as an attribute
        attr = _xml_quoteattr(_XML_BAD_CHARS.sub("\ufffd", tag))
        open_tag, close_tag = f"item key={attr}", "item"
    value = _xml_plain(value)
    if value is None:
        out.append(f"<{open_tag}/>")
        return
    out.append(f"<{open_tag}>")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _xml_element(k, v, out)
    elif isinstance(value, (list, tuple, set, frozenset)) or (
        isinstance(value, Iterator) and not isinstance(value, (str, bytes))
    ):
        for v in value:
            _xml_element("item", v, out)
    else:
        out.append(_xml_text(value))
    out.append(f"</{close_tag}>")


def to_xml(data: Any, root_name: str = "root") -> str:
    """Serialise dicts, lists and scalars to an XML document.

    Keys become elements (keys that are not valid XML names become
    ``<item key="...">``), list elements become ``<item>``, ``None`` an empty
    element, booleans ``true``/``false``; text is escaped and characters XML 1.0
    cannot represent are replaced by U+FFFD. Dataclasses and pydantic models are
    converted to dicts first.
    """
    if not _XML_NAME.match(str(root_name)):
        raise ValueError(f"{root_name!r} is not a valid XML element name")
    out = ['<?xml version="1.0" encoding="UTF-8"?>']
    _xml_element(root_name, data, out)
    return "".join(out)
