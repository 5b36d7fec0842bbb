"""The list query parameters of RabbitMQ's management API.

`name` (substring, or a regular expression with `use_regex=true`), `sort` (a dotted field
path) and `sort_reverse`, `page` and `page_size` (at most 500; a paged answer is an object
with the counts, as RabbitMQ's), and `columns` (comma-separated dotted paths; the answer
keeps only those).
"""
from __future__ import annotations

import re
from typing import Any, Callable

MAX_PAGE_SIZE = 500
DEFAULT_PAGE_SIZE = 100


class QueryError(Exception):
    """A bad query parameter: becomes a 400 with RabbitMQ's error and reason."""

    def __init__(self, error: str, reason: str) -> None:
        super().__init__(reason)
        self.error = error
        self.reason = reason


def lookup(item: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(item, dict):
            return None
        item = item.get(key)
    return item


def sort_key(value: Any) -> tuple:
    # None first, then numbers, then text (RabbitMQ sorts mixed values in Erlang term order:
    # numbers before binaries).
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value.lower(), value)
    return (3, str(value))


def name_matcher(query: dict[str, str]) -> Callable[[str], bool]:
    """`name`: a case-insensitive substring, or with use_regex=true a regular expression."""
    name = query.get("name", "")
    if query.get("use_regex", "").lower() == "true":
        try:
            rx = re.compile(name)
        except re.error as exc:
            raise QueryError("bad_request", f"invalid regular expression: {exc}") from None
        return lambda text: isinstance(text, str) and rx.search(text) is not None
    low = name.lower()
    return lambda text: isinstance(text, str) and low in text.lower()


def filter_items(items: list[dict], query: dict[str, str]) -> list[dict]:
    if not query.get("name"):
        return items
    match = name_matcher(query)
    return [i for i in items if match(i.get("name"))]


def sort_items(items: list[dict], query: dict[str, str]) -> list[dict]:
    sort = query.get("sort")
    reverse = query.get("sort_reverse", "").lower() == "true"
    if not sort:
        return items[::-1] if reverse else items
    path = sort.split(".")
    return sorted(items, key=lambda i: sort_key(lookup(i, path)), reverse=reverse)


def pick_columns(item: dict, columns: list[list[str]]) -> dict:
    out: dict = {}
    for path in columns:
        value = lookup(item, path)
        if value is None and not _has(item, path):
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _has(item: Any, path: list[str]) -> bool:
    for key in path:
        if not isinstance(item, dict) or key not in item:
            return False
        item = item[key]
    return True


def columns_of(query: dict[str, str]) -> list[list[str]] | None:
    text = query.get("columns")
    if not text:
        return None
    return [c.split(".") for c in text.split(",") if c]


def paging(query: dict[str, str]) -> tuple[int, int] | None:
    """(page, page_size) when the client asked for a page, else None."""
    if "page" not in query:
        return None
    page_text = query.get("page", "")
    size_text = query.get("page_size")
    try:
        page = int(page_text)
        size = int(size_text) if size_text is not None else DEFAULT_PAGE_SIZE
    except ValueError:
        page, size = -1, -1
    if page < 1 or size < 1 or size > MAX_PAGE_SIZE:
        raise QueryError(
            "invalid_pagination_parameters",
            f"Invalid pagination parameters: page number {page_text}, page size "
            f"{size_text if size_text is not None else 'undefined'}",
        )
    return page, size


def apply(items: list[dict], query: dict[str, str]) -> Any:
    """Filter, sort, page and trim a listing as RabbitMQ does."""
    pg = paging(query)
    total = len(items)
    items = filter_items(items, query)
    items = sort_items(items, query)
    cols = columns_of(query)
    if pg is None:
        return [pick_columns(i, cols) for i in items] if cols else items
    page, size = pg
    filtered = len(items)
    check_page(page, size, filtered)
    chunk = items[(page - 1) * size : page * size]
    if cols:
        chunk = [pick_columns(i, cols) for i in chunk]
    return page_object(chunk, page, size, filtered, total)


def check_page(page: int, size: int, filtered: int) -> None:
    if page > max(1, (filtered + size - 1) // size):
        raise QueryError(
            "page_out_of_range", f"Page out of range, page: {page} page size: {size}, len: {filtered}"
        )


def page_object(items: list, page: int, size: int, filtered: int, total: int) -> dict:
    return {
        "filtered_count": filtered,
        "item_count": len(items),
        "items": items,
        "page": page,
        "page_count": max(1, (filtered + size - 1) // size),
        "page_size": size,
        "total_count": total,
    }
