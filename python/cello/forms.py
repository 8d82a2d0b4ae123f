"""``FormData``: a request's form fields (repeated names kept) and uploaded files."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class FormData(Mapping[str, str]):
    """Form fields as a read-only mapping (the last value of a repeated name) plus
    ``get_list(name)`` and the multipart ``files`` (name → ``UploadedFile``).
    ``FormData.from_request(request)`` reads a request's urlencoded or multipart body."""

    def __init__(self, fields: Any = None, files: Mapping[str, Any] | None = None) -> None:
        items = fields.items() if isinstance(fields, Mapping) else (fields or [])
        self._items: list[tuple[str, str]] = [(str(k), str(v)) for k, v in items]
        self.files: dict[str, Any] = dict(files or {})

    @classmethod
    def from_request(cls, request: Any) -> FormData:
        fields = request.form()
        items = [(k, v) for k in fields for v in request.form_list(k)]
        return cls(items, request.files())

    def __getitem__(self, key: str) -> str:
        for k, v in reversed(self._items):
            if k == key:
                return v
        raise KeyError(key)

    def get_list(self, key: str) -> list[str]:
        return [v for k, v in self._items if k == key]

    def get_file(self, key: str) -> Any:
        return self.files.get(key)

    def multi_items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(k for k, _ in self._items))

    def __len__(self) -> int:
        return len(dict.fromkeys(k for k, _ in self._items))

    def __repr__(self) -> str:
        return f"FormData({self._items!r}, files={list(self.files)!r})"


__all__ = ["FormData"]
