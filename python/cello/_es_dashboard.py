"""Development dashboards: ``/events`` (aggregates, their events, the global stream, projection
positions) and ``/sagas`` (executions, steps, statuses, errors, retry buttons).

Server-rendered HTML with inline CSS (works offline). Served only when the app runs in
development mode (debug); otherwise the paths answer 404, as if they did not exist.
"""

from __future__ import annotations

import asyncio
import html
import json
from typing import Any

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222;background:#fafafa}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:1.6rem}
table{border-collapse:collapse;width:100%;background:#fff;margin:.5rem 0}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;font-size:.85rem;vertical-align:top}
th{background:#eee}code,pre{font-size:.8rem;margin:0;white-space:pre-wrap}
.completed,.compensated{color:#060}.failed,.compensation_failed{color:#a00;font-weight:bold}
.running,.compensating{color:#a60}nav a{margin-right:1rem}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _page(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        f'<style>{_CSS}</style></head><body><nav><a href="/events">Events</a><a href="/sagas">Sagas</a></nav>'
        f"<h1>{_e(title)}</h1>{body}</body></html>"
    )


def _table(table_id: str, headers: list[str], rows: list[list[str]], empty: str) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    if not rows:
        body = f'<tr><td colspan="{len(headers)}">{_e(empty)}</td></tr>'
    else:
        body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _development(app: Any) -> bool:
    """True when the executor serving this request runs in development (debug) mode."""
    loop = asyncio.get_running_loop()
    for ex in list(app.__dict__.get("_live_executors", ())):
        if getattr(ex, "loop", None) is loop:
            return bool(ex.config.get("debug"))
    return False


def _not_found() -> Any:
    from .errors import HTTPException

    return HTTPException(404, "Not Found")


async def events_page(app: Any, request: Any) -> Any:
    from .responses import Response

    if not _development(app):
        raise _not_found()
    store = app._singletons.get("event_store")
    if store is None:
        raise _not_found()
    aggregate = request.query.get("aggregate")
    parts = []
    if aggregate:
        events = await store.get_events(aggregate)
        rows = [
            [_e(ev.version), _e(ev.position), _e(ev.event_type), _e(ev.timestamp.isoformat()),
             f"<pre>{_e(json.dumps(ev.data, default=str, indent=1))}</pre>"]
            for ev in events
        ]  # fmt: skip
        parts.append(f"<h2>Aggregate {_e(aggregate)}</h2>")
        parts.append(_table("aggregate-events", ["version", "position", "type", "time", "data"], rows, "no events"))
    aggs = await store.aggregates(100)
    rows = [
        [f'<a href="/events?aggregate={html.escape(a["aggregate_id"], quote=True)}">{_e(a["aggregate_id"])}</a>',
         _e(a["version"]), _e(a["last_position"])]
        for a in aggs
    ]  # fmt: skip
    parts.append("<h2>Aggregates</h2>")
    parts.append(_table("aggregates", ["aggregate", "version", "last position"], rows, "no aggregates yet"))
    last = await store.last_position()
    stream = await store.read_all(max(0, last - 50))
    rows = [
        [_e(ev.position), f'<a href="/events?aggregate={html.escape(str(ev.aggregate_id), quote=True)}">'
         f"{_e(ev.aggregate_id)}</a>", _e(ev.version), _e(ev.event_type), _e(ev.timestamp.isoformat())]
        for ev in reversed(stream)
    ]  # fmt: skip
    parts.append("<h2>Global stream (latest 50)</h2>")
    parts.append(_table("stream", ["position", "aggregate", "version", "type", "time"], rows, "no events yet"))
    positions = await store.projection_positions()
    rows = [[_e(name), _e(pos), _e(last - pos)] for name, pos in sorted(positions.items())]
    parts.append("<h2>Projections</h2>")
    parts.append(_table("projections", ["projection", "position", "behind"], rows, "no projections"))
    return Response.html(_page(f"Event store ({store.backend})", "".join(parts)))


async def sagas_page(app: Any, request: Any) -> Any:
    from .responses import Response

    if not _development(app):
        raise _not_found()
    orch = app._singletons.get("saga_orchestrator")
    if orch is None:
        raise _not_found()
    status = request.query.get("status") or None
    executions = await orch.list_executions(status, 200)
    rows = []
    for ex in executions:
        steps = "<br>".join(
            f'{_e(s["name"])}: <span class="{_e(s["status"])}">{_e(s["status"])}</span>'
            f" ({_e(s.get('attempts', 0))} attempt(s))"
            + (f" — {_e(s['error'])}" if s.get("error") else "")
            + (f" — compensation: {_e(s['compensation_error'])}" if s.get("compensation_error") else "")
            for s in ex.steps
        )
        retry = ""
        if ex.status in ("running", "compensating", "compensation_failed"):
            retry = (
                f'<form method="post" action="/sagas/{html.escape(ex.execution_id, quote=True)}/retry">'
                '<button type="submit">Retry</button></form>'
            )
        rows.append(
            [_e(ex.execution_id), _e(ex.saga_name), f'<span class="{_e(ex.status)}">{_e(ex.status)}</span>', steps,
             _e(ex.error), _e(ex.updated_at), retry]
        )  # fmt: skip
    body = _table("executions", ["execution", "saga", "status", "steps", "error", "updated", ""], rows, "no executions")
    return Response.html(_page("Sagas", body))


async def saga_retry(app: Any, request: Any) -> Any:
    from .responses import Response

    if not _development(app):
        raise _not_found()
    orch = app._singletons.get("saga_orchestrator")
    if orch is None:
        raise _not_found()
    execution_id = request.params["id"]
    if await orch.get_execution(execution_id) is None:
        raise _not_found()
    await orch.retry(execution_id)
    return Response.redirect("/sagas", status=303)


def install(app: Any) -> None:
    """Add the dashboard routes once (they check the mode per request)."""
    if app.__dict__.get("_es_dashboards"):
        return
    app._es_dashboards = True

    async def events_dashboard(request: Any) -> Any:
        return await events_page(app, request)

    async def sagas_dashboard(request: Any) -> Any:
        return await sagas_page(app, request)

    async def sagas_dashboard_retry(request: Any) -> Any:
        return await saga_retry(app, request)

    app.route("/events", ["GET"], include_in_schema=False)(events_dashboard)
    app.route("/sagas", ["GET"], include_in_schema=False)(sagas_dashboard)
    app.route("/sagas/{id}/retry", ["POST"], include_in_schema=False)(sagas_dashboard_retry)
