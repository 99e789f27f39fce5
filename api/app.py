"""The ASGI application: REST under ``/api/v1``, GraphQL at ``/graphql`` (GraphiQL on a
browser GET, subscriptions over websockets with graphql-transport-ws), OpenAPI at
``/docs``. :mod:`serve_app` runs it in Ray Serve replicas; it runs under plain uvicorn too
(the API benchmark compares the two).

The history (a sensor's time series, a machine's states, RUL predictions and anomalies
over a time range) is read from PostgreSQL when ``database_url`` is set
(:mod:`api.history`); without it those routes answer 503.

Work orders, alerts and the technicians' plan (``/api/v1/maintenance/...``) are the
maintenance service's, asked over NATS request/reply (:mod:`api.maintenance`); when it
does not answer those routes answer 503.

Every error is the JSON of :class:`api.errors.ApiError`, never a bare 500 for bad input:
401 (no, bad or expired token), 403 (role or gateway boundary), 404, 413 (body over
``max_body_bytes``, or a raw range with too many readings), 422 (malformed request), 429
(over the per-token rate), 503 (NATS, the actors or the history database unavailable).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the dependencies of the
# routes (``Annotated[Principal, Depends(caller)]``) from live annotations, and ``caller``
# is local to :func:`create_app`.
import asyncio
import contextlib
import json
import logging
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any, cast

from cross_web import HTTPException as GraphQLHTTPException
from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketDisconnect
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions.protocols.graphql_transport_ws.handlers import (
    BaseGraphQLTransportWSHandler,
)

from api import audit, dashboard, present
from api.auth import Authority, Principal, Role
from api.errors import ERROR_RESPONSES, ApiError, forbidden, not_found, unauthorized
from api.feeds import Feeds, key_of
from api.graphql import schema
from api.history import NO_DATABASE, History, parse_time, time_range
from api.limits import BodySizeLimit, RateLimiter
from api.maintenance import (
    MaintenanceClient,
    alert_doc,
    created_doc,
    plan_doc,
    replan_and_audit,
    unavailable,
    valid,
    workorder_doc,
)
from api.sessions import COOKIE as SESSION_COOKIE
from api.sessions import Sessions
from api.telemetry import plan_batch
from api.view import AssetView, FleetView
from schemas import subjects
from schemas.alerts import AlertStatus
from schemas.anomaly import Severity
from schemas.common import ID_PATTERN
from schemas.maintenance import WorkOrderStatus, WorkOrderType
from schemas.maintenance_api import (
    AlertAction,
    AlertFilter,
    CreateWorkOrder,
    KpiRequest,
    ScheduleRequest,
    ShelveAlert,
    WorkOrderFilter,
    WorkOrderRequest,
)
from schemas.problems import first_problem
from schemas.telemetry import scoped_message_id
from schemas.twin import TwinState
from store.queries import AGGREGATIONS

log = logging.getLogger("twinfleet.api")


@dataclass
class Settings:
    nats_url: str
    secret: str
    fleet_name: str = "plant"
    max_body_bytes: int = 2 * 1024 * 1024
    rate_per_s: float = 50.0
    rate_burst: float = 100.0
    next_sync_ms: int = 1_000
    anomaly_replay_h: float = 24.0
    database_url: str | None = None
    """The history database (PostgreSQL); ``None``: no history routes (503)."""
    maintenance_timeout_s: float = 15.0
    """How long to wait for the maintenance service's reply (then 503)."""
    max_clones_per_user: int = 2
    """What-if clones one user (token subject) may hold at once; each is a process."""
    max_clones: int = 8
    """What-if clones held at once by everyone together."""
    ws_init_timeout_s: float = 5.0
    """How long a websocket may wait before its ``connection_init`` (then closed, 4408)."""
    ws_session_recheck_s: float = 30.0
    """How often a websocket opened with a dashboard session checks that the session is
    still live (logged out, disabled: closed, 4401)."""


@dataclass
class Services:
    """What the routes and resolvers use; one per replica."""

    settings: Settings
    view: FleetView
    authority: Authority
    limiter: RateLimiter
    access: Any = None  # actors.access.FleetAccess when running on Ray
    counters: Counter[str] = field(default_factory=Counter)
    feeds: Feeds = field(default_factory=Feeds)
    history: History | None = None  # when settings.database_url is set
    maintenance: MaintenanceClient | None = None  # on the view's NATS connection

    async def asset(self, machine_id: str, consistent: bool = False) -> AssetView | None:
        """From the view, or (``consistent``) from the machine's actor."""
        if machine_id not in self.view.machines:
            return None
        if not consistent:
            return self.view.asset(machine_id)
        if self.access is None:
            raise ApiError(503, "unavailable", "consistent reads need the actors (Ray)")
        try:
            state_json, _seq = await self.access.state(machine_id)
        except KeyError as exc:
            raise not_found(str(exc.args[0])) from None
        state = TwinState.model_validate_json(state_json)
        spec = self.view.machines[machine_id]
        return AssetView(spec, state, state.rul, "actor")

    def principal(self, header: str | None) -> Principal:
        principal = self.authority.verify(header)
        self.refuse_revoked(principal)
        self.limiter.check(principal.token_id)
        return principal

    def refuse_revoked(self, principal: Principal) -> None:
        """401 for a revoked token (:mod:`api.revocations`)."""
        why = self.view.revocations.refusal(
            principal.token_id, principal.subject, principal.issued_at
        )
        if why is not None:
            self.counters["revoked_refused"] += 1
            raise unauthorized(why)

    def require_history(self) -> History:
        if self.history is None:
            raise ApiError(503, "unavailable", NO_DATABASE)
        return self.history

    def require_maintenance(self) -> MaintenanceClient:
        if self.maintenance is None:
            raise unavailable()
        return self.maintenance

    async def stop(self) -> None:
        """Close the history pool, the maintenance client's subscriptions and the view's
        NATS connection."""
        if self.history is not None:
            await self.history.close()
        if self.maintenance is not None:
            await self.maintenance.stop()
        await self.view.stop()


TOO_LARGE = "tf.too_large"
"""What :meth:`Router.decode_json` makes of a websocket message over the size limit."""
EXPIRED = "the token has expired; connect again with a new one"


# -- what the OpenAPI document says of query parameters the routes check themselves ---------
# (the checks stay where they were, with their messages; the document states them)
TIME = Query(
    description="ISO 8601 with a time zone, e.g. 2026-11-29T00:00:00Z, from year 2 to 9998",
    json_schema_extra={"format": "date-time"},
)
IDENTIFIER = Query(json_schema_extra={"pattern": ID_PATTERN})
_SPACE = (
    r"[\t\n\u000b\u000c\r\u001c-\u001f \u0085\u00a0\u1680\u2000-\u200a"
    r"\u2028\u2029\u202f\u205f\u3000]*"
)
"""What ``str.strip`` removes (Python's whitespace), as a JSON Schema pattern."""


def one_of(values: type[StrEnum]) -> Any:
    """A query parameter taking one of an enumeration's values."""
    return Query(json_schema_extra={"enum": [v.value for v in values]})


def listed(values: type[StrEnum]) -> Any:
    """A repeatable query parameter of an enumeration's values, each repetition also
    comma-separated, blanks around them and empty items ignored (:func:`_split`).

    >>> import re
    >>> pattern = listed(AlertStatus).json_schema_extra["items"]["pattern"]
    >>> [bool(re.match(pattern, v)) for v in ("open", " open , resolved,", "", "opened")]
    [True, True, True, False]
    """
    one = "(?:" + "|".join(re.escape(v.value) for v in values) + ")"
    item = f"{_SPACE}(?:{one}{_SPACE})?"
    return Query(
        json_schema_extra={"items": {"type": "string", "pattern": f"^{item}(?:,{item})*$"}}
    )


def _json_error(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _document_security(app: FastAPI) -> None:
    """The OpenAPI document names how to authenticate: a bearer token, or the dashboard's
    session cookie (with ``X-CSRF-Token`` on requests that change something)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            doc.setdefault("components", {})["securitySchemes"] = {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
                "session": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE},
            }
            doc["security"] = [{"bearer": []}, {"session": []}]
            # the telemetry route reads its body itself (to refuse readings one by one)
            from api.telemetry import HttpBatch

            batch = HttpBatch.model_json_schema(ref_template="#/components/schemas/{model}")
            doc["components"].setdefault("schemas", {}).update(batch.pop("$defs", {}))
            doc["components"]["schemas"]["HttpBatch"] = batch
            post = doc["paths"].get("/api/v1/telemetry/batch", {}).get("post")
            if post is not None:
                post["requestBody"] = {
                    "required": True,
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/HttpBatch"}}
                    },
                }
            for path in ("/api/v1/health", "/api/v1/ready"):
                for operation in doc["paths"].get(path, {}).values():
                    operation["security"] = []
            _document_the_rest(doc)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


ERROR = {"$ref": "#/components/schemas/ErrorBody"}
GRAPHQL_REFUSAL = {
    "description": "strawberry refuses the request before GraphQL runs (not JSON, no "
    "query, a mutation over GET, variables not an object, a batch)",
    "content": {"application/json": {"schema": ERROR}},
}
GRAPHQL_ANSWER = {
    "type": "object",
    "description": "GraphQL's answer: data, and errors with extensions.code for refusals",
    "properties": {
        "data": {"anyOf": [{"type": "object"}, {"type": "null"}]},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}


def _document_the_rest(doc: dict[str, Any]) -> None:
    """What FastAPI cannot see in the routes: a query parameter is absent or a string, never
    JSON's null; who may call the session routes; GraphQL's parameters, body and answers;
    the CSV export; the conflicts of the maintenance service's life cycles."""
    paths = doc["paths"]
    for operations in paths.values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                kinds = schema.get("anyOf", [])
                if len(kinds) == 2 and {"type": "null"} in kinds:
                    (kind,) = [k for k in kinds if k != {"type": "null"}]
                    rest = {k: v for k, v in schema.items() if k not in ("anyOf", "default")}
                    parameter["schema"] = {**kind, **rest}
    session = paths.get("/api/v1/session", {})
    if session:
        session["post"]["security"] = []  # logging in
        session["get"]["security"] = [{"session": []}]
        session["delete"]["security"] = [{"session": []}, {}]  # without one: clears the cookie
    graphql = paths.get("/graphql", {})
    if graphql:
        get, post = graphql["get"], graphql["post"]
        get["description"] = (
            "GraphiQL in a browser (no token needed); with ``query``, a query (not a "
            "mutation) answered as over POST (``variables`` too, as a JSON object)."
        )
        get["security"] = [{"bearer": []}, {"session": []}, {}]
        get["parameters"] = [
            {"name": "query", "in": "query", "schema": {"type": "string", "minLength": 1}},
            {"name": "operationName", "in": "query", "schema": {"type": "string"}},
        ]
        get["responses"]["200"]["content"] = {
            "text/html": {"schema": {"type": "string"}},
            "application/json": {"schema": GRAPHQL_ANSWER},
        }
        post["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["query"],
                        "properties": {
                            "query": {"type": "string", "minLength": 1},
                            "variables": {"anyOf": [{"type": "object"}, {"type": "null"}]},
                            # any value: one that names no operation of the query is
                            # refused (400) once the query parses
                            "operationName": {},
                        },
                    }
                }
            },
        }
        post["responses"]["200"]["content"] = {"application/json": {"schema": GRAPHQL_ANSWER}}
        for operation in (get, post):
            operation["responses"]["400"] = GRAPHQL_REFUSAL
    workorders = paths.get("/api/v1/maintenance/workorders", {}).get("get")
    if workorders is not None:
        workorders["responses"]["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
    for path in ("/api/v1/maintenance/alerts/{alert_id}/shelve",):
        for operation in paths.get(path, {}).values():
            operation["responses"]["409"] = {
                "description": "the alert's life cycle does not allow it (closed, not shelved)",
                "content": {"application/json": {"schema": ERROR}},
            }


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="twinfleet",
        version="1",
        description="Digital twins of industrial machines: state, anomalies, remaining "
        "useful life, what-if. Bearer tokens: `twinfleet token --role viewer`.",
        responses=ERROR_RESPONSES,
    )
    _document_security(app)

    # -- errors ---------------------------------------------------------------------------
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        services.counters[f"http_{exc.status}"] += 1
        return _json_error(exc)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        where, what = first_problem(exc, skip={"body", "query", "path"})
        services.counters["http_422"] += 1
        return _json_error(ApiError(422, "invalid_request", f"{where}: {what}", where))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        services.counters[f"http_{exc.status_code}"] += 1
        answer = _json_error(ApiError(exc.status_code, code, str(exc.detail)))
        if exc.status_code == 405:  # which methods the route takes
            allowed = sorted(
                {
                    m
                    for r in app.routes
                    if getattr(r, "path", None) == request.url.path
                    for m in getattr(r, "methods", None) or ()
                }
            )
            answer.headers["Allow"] = ", ".join(allowed)
        return answer

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        services.counters["http_500"] += 1
        log.exception("unexpected error on %s", request.url.path)
        return _json_error(ApiError(500, "internal", f"internal error ({type(exc).__name__})"))

    # -- who is asking: a bearer token, or a dashboard session's cookie (api/sessions.py) --
    logins = Sessions(services)
    app.include_router(logins.router())

    async def caller(request: Request) -> Principal:
        return await logins.principal(request)

    def viewer(who: Annotated[Principal, Depends(caller)]) -> Principal:
        who.require(Role.VIEWER, "reading assets")
        return who

    def operator(who: Annotated[Principal, Depends(caller)]) -> Principal:
        who.require(Role.OPERATOR, "changing maintenance")
        return who

    def gateway(who: Annotated[Principal, Depends(caller)]) -> Principal:
        if who.role is not Role.GATEWAY:
            raise forbidden(f"sending telemetry needs a gateway token; this token is {who.role}")
        return who

    # -- REST -----------------------------------------------------------------------------
    @app.get("/api/v1/health", tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness, and what the replica's view holds (no token needed)."""
        view = services.view
        return {
            "status": "ok",
            "nats_connected": bool(view.nc is not None and view.nc.is_connected),
            "machines": len(view.machines),
            "states": len(view.states),
            "twin_events": view.counters["twin_events"],
            "anomalies": view.counters["anomalies"],
            "subscribers": services.feeds.subscribers,
            "shared_feeds": len(services.feeds.running),
            "dropped_updates": view.broadcast.dropped
            + services.feeds.dropped
            + (0 if services.maintenance is None else services.maintenance.dropped),
            "refused": {k: v for k, v in services.counters.items() if k.startswith("http_")},
            "rate_limited": services.limiter.refused,
            "rejected_readings": services.counters["rejected_readings"],
            "history_database": services.history is not None,
            "maintenance_events": (
                0
                if services.maintenance is None
                else services.maintenance.counters["alert_events"]
                + services.maintenance.counters["workorder_events"]
            ),
        }

    @app.get("/api/v1/ready", tags=["service"])
    async def ready() -> JSONResponse:
        """200 once the view has read the twins' states and the recent anomalies."""
        if services.view.ready:
            return JSONResponse({"status": "ready"})
        return _json_error(ApiError(503, "not_ready", "the view is still loading from NATS"))

    @app.get("/api/v1/assets/{asset_id}", tags=["assets"])
    async def get_asset(
        asset_id: str, who: Annotated[Principal, Depends(viewer)], consistent: bool = False
    ) -> dict[str, Any]:
        """One machine and its twin; ``?consistent=true`` reads it from its actor."""
        view = await services.asset(asset_id, consistent)
        if view is None:
            raise not_found(f"no asset {asset_id!r}")
        records = list(reversed(services.view.anomalies.get(asset_id, ())))[:20]
        rows = [present.anomaly_row(r, services.view.acks.get(r.anomaly_id)) for r in records]
        return present.asset_answer(view, rows)

    @app.get("/api/v1/assets/{asset_id}/rul", tags=["assets"])
    async def get_rul(asset_id: str, who: Annotated[Principal, Depends(viewer)]) -> dict[str, Any]:
        """Remaining useful life: distribution, factors and recommended actions."""
        view = services.view.asset(asset_id)
        if view is None:
            raise not_found(f"no asset {asset_id!r}")
        return present.rul_answer(view)

    @app.get("/api/v1/assets/{asset_id}/history", tags=["history"])
    async def get_asset_history(
        asset_id: str,
        who: Annotated[Principal, Depends(viewer)],
        start: Annotated[str | None, TIME] = None,
        end: Annotated[str | None, TIME] = None,
    ) -> dict[str, Any]:
        """A machine's states (status, health), RUL predictions and anomalies in
        ``[start, end)``, from the history database. ``start`` and ``end`` are ISO 8601
        with a zone; they default to the 24 hours before now."""
        lo, hi = time_range(parse_time(start, "start"), parse_time(end, "end"))
        return await services.require_history().asset_history(asset_id, lo, hi)

    @app.get("/api/v1/sensors/{sensor_id}/timeseries", tags=["history"])
    async def get_timeseries(
        sensor_id: str,
        who: Annotated[Principal, Depends(viewer)],
        start: Annotated[str | None, TIME] = None,
        end: Annotated[str | None, TIME] = None,
        aggregation: Annotated[str, Query(json_schema_extra={"enum": list(AGGREGATIONS)})] = "auto",
    ) -> dict[str, Any]:
        """A sensor's values in ``[start, end)`` (ISO 8601 with a zone; the 24 hours
        before now by default) with their statistics and the anomalies on it.
        ``aggregation``: ``raw`` (the readings, with their quality), ``1m`` or ``1h``
        (buckets: avg, min, max, stddev, count), or ``auto``: raw up to 2 hours, 1m up
        to 3 days, else 1h. A raw range over 200,000 readings is refused (413)."""
        lo, hi = time_range(parse_time(start, "start"), parse_time(end, "end"))
        return await services.require_history().timeseries(sensor_id, lo, hi, aggregation)

    @app.post("/api/v1/telemetry/batch", status_code=202, tags=["telemetry"])
    async def telemetry_batch(
        request: Request, who: Annotated[Principal, Depends(gateway)]
    ) -> dict[str, Any]:
        """Readings from a gateway (its own sites only), published to JetStream."""
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, "invalid_json", f"the body is not JSON: {exc}") from None
        plan = plan_batch(body, services.view.sensors, sites=who.sites, gateway_id=who.gateway_id)
        js = services.view.js
        duplicates = 0
        for batch in plan.batches:
            machine = batch.readings.machine_id[0] if len(batch) else batch.anomalies[0].machine_id
            try:
                ack = await js.publish(
                    subjects.telemetry(batch.site_id, machine),
                    batch.model_dump_json().encode(),
                    # in the gateway's namespace: "a" + "b-c" and "a-b" + "c" stay apart
                    headers={"Nats-Msg-Id": scoped_message_id(batch.gateway_id, batch.batch_id)},
                )
            except Exception as exc:  # NATS down or JetStream not answering
                services.counters["publish_failures"] += 1
                raise ApiError(
                    503,
                    "unavailable",
                    f"the batch could not be stored ({type(exc).__name__}); send it again "
                    "unchanged: what was stored already is recognised and applied once",
                ) from None
            duplicates += bool(ack.duplicate)
        rejected = len(plan.rejected) + len(plan.anomalies_rejected)
        services.counters["rejected_readings"] += rejected
        services.counters["accepted_readings"] += plan.readings_accepted
        if rejected:
            letter = {
                "reason": "readings refused by the HTTP telemetry endpoint",
                "gateway_id": plan.gateway_id,
                "batch_id": plan.batch_id,
                "readings": plan.rejected,
                "anomalies": plan.anomalies_rejected,
            }
            await services.view.nc.publish(
                subjects.dead_letter(plan.gateway_id), json.dumps(letter).encode()
            )
        return {
            "status": "accepted",
            "batch_id": plan.batch_id,
            "readings_accepted": plan.readings_accepted,
            "anomalies_accepted": plan.anomalies_accepted,
            "readings_rejected": plan.rejected,
            "anomalies_rejected": plan.anomalies_rejected,
            "duplicate_messages": duplicates,
            "next_sync": int(time.time() * 1000) + services.settings.next_sync_ms,
        }

    # -- maintenance (the maintenance service, over NATS) ---------------------------------
    @app.post("/api/v1/maintenance/workorders", status_code=201, tags=["maintenance"])
    async def create_workorder(
        body: WorkOrderRequest,
        who: Annotated[Principal, Depends(operator)],
        idempotency_key: Annotated[
            str | None,
            Header(alias="Idempotency-Key", json_schema_extra={"minLength": 1, "maxLength": 200}),
        ] = None,
    ) -> JSONResponse:
        """A work order, placed by the planner (201). With ``Idempotency-Key``, the same
        key again answers the order it created (200), and makes no other."""
        if idempotency_key is not None and not 0 < len(idempotency_key) <= 200:
            raise ApiError(
                422,
                "invalid_request",
                "Idempotency-Key: between 1 and 200 characters",
                "Idempotency-Key",
            )
        request = valid(
            CreateWorkOrder, request=body, actor=who.subject, idempotency_key=idempotency_key
        )
        made = await services.require_maintenance().create_workorder(request)
        order = made.work_order
        if made.created:
            await audit.record(
                services,
                who,
                "create_workorder",
                order.workorder_id,
                {"asset_id": order.asset_id, "type": order.type.value, "key": idempotency_key},
            )
        return JSONResponse(created_doc(made), status_code=201 if made.created else 200)

    @app.get("/api/v1/maintenance/workorders", tags=["maintenance"], response_model=None)
    async def list_workorders(
        who: Annotated[Principal, Depends(viewer)],
        asset_id: Annotated[str | None, IDENTIFIER] = None,
        status: Annotated[list[str] | None, listed(WorkOrderStatus)] = None,
        type: Annotated[str | None, one_of(WorkOrderType)] = None,
        technician_id: Annotated[str | None, IDENTIFIER] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
        format: Annotated[str, Query(json_schema_extra={"enum": ["json", "csv"]})] = "json",
    ) -> Any:
        """Work orders (``status`` repeated or comma-separated); ``format=csv``: the CMMS
        export (``text/csv``, an attachment)."""
        if format not in ("json", "csv"):
            raise ApiError(
                422, "invalid_request", f"format must be json or csv, got {format!r}", "format"
            )
        wanted = valid(
            WorkOrderFilter,
            asset_id=asset_id,
            status=_split(status),
            type=type,
            technician_id=technician_id,
            limit=limit,
        )
        client = services.require_maintenance()
        if format == "csv":
            text = await client.export_csv(wanted)
            return Response(
                text,
                media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": 'attachment; filename="workorders.csv"'},
            )
        orders = await client.list_workorders(wanted)
        return {"count": len(orders), "workorders": [workorder_doc(o) for o in orders]}

    @app.get("/api/v1/maintenance/schedule", tags=["maintenance"])
    async def get_schedule(
        who: Annotated[Principal, Depends(viewer)],
        horizon_hours: Annotated[float, Query(gt=0, le=24 * 31, allow_inf_nan=False)] = 168.0,
    ) -> dict[str, Any]:
        """The technicians' current plan with its expected cost. Over another
        ``horizon_hours`` than the current plan's: a preview, not committed. Reading
        never changes a work order or raises an alert; replanning is
        ``POST /api/v1/maintenance/replan`` (operator)."""
        request = valid(ScheduleRequest, horizon_hours=horizon_hours)
        return plan_doc(await services.require_maintenance().schedule(request))

    @app.post("/api/v1/maintenance/replan", tags=["maintenance"])
    async def replan(
        who: Annotated[Principal, Depends(operator)], body: ReplanBody | None = None
    ) -> dict[str, Any]:
        """Plan the open work orders again over the next ``horizon_hours`` and commit it:
        the orders' dates and technicians change, orders that cannot be placed raise
        alerts."""
        horizon_hours = ReplanBody().horizon_hours if body is None else body.horizon_hours
        plan = await replan_and_audit(services, who, horizon_hours)
        return plan_doc(plan)

    @app.get("/api/v1/maintenance/alerts", tags=["maintenance"])
    async def list_alerts(
        who: Annotated[Principal, Depends(viewer)],
        machine_id: Annotated[str | None, IDENTIFIER] = None,
        status: Annotated[list[str] | None, listed(AlertStatus)] = None,
        min_severity: Annotated[str | None, one_of(Severity)] = None,
        rule_id: Annotated[str | None, IDENTIFIER] = None,
        shelved: bool | None = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1_000,
    ) -> dict[str, Any]:
        """Alerts (``status`` repeated or comma-separated), as the alert manager holds
        them."""
        wanted = valid(
            AlertFilter,
            machine_id=machine_id,
            status=_split(status),
            min_severity=min_severity,
            rule_id=rule_id,
            shelved=shelved,
            limit=limit,
        )
        alerts = await services.require_maintenance().list_alerts(wanted)
        return {"count": len(alerts), "alerts": [alert_doc(a) for a in alerts]}

    @app.get("/api/v1/maintenance/alerts/kpis", tags=["maintenance"])
    async def alarm_kpis(
        who: Annotated[Principal, Depends(viewer)],
        start: Annotated[str | None, TIME] = None,
        end: Annotated[str | None, TIME] = None,
    ) -> dict[str, Any]:
        """Alarm KPIs (ISA-18.2, EEMUA 191) of the alerts raised in ``[start, end)``
        (ISO 8601 with a zone; default: the 24 hours before the plant's now): per site
        and hour, the peak in 10 minutes, the share by priority, standing alerts, the top
        bad actors."""
        request = valid(KpiRequest, start=parse_time(start, "start"), end=parse_time(end, "end"))
        kpis = await services.require_maintenance().alarm_kpis(request)
        return kpis.model_dump(mode="json")

    @app.post("/api/v1/maintenance/alerts/{alert_id}/shelve", tags=["maintenance"])
    async def shelve_alert(
        alert_id: str, body: ShelveBody, who: Annotated[Principal, Depends(operator)]
    ) -> dict[str, Any]:
        """Shelve an alert for ``minutes`` (at most the plant's
        ``alerting.max_shelve_minutes``, 24 h by default) with a ``reason``: it notifies
        nothing and does not escalate until it comes back by itself."""
        request = valid(
            ShelveAlert,
            alert_id=alert_id,
            actor=who.subject,
            minutes=body.minutes,
            reason=body.reason,
        )
        alert = await services.require_maintenance().shelve_alert(request)
        await audit.record(
            services,
            who,
            "shelve_alert",
            alert.alert_id,
            {"minutes": body.minutes, "reason": body.reason},
        )
        return alert_doc(alert)

    @app.delete("/api/v1/maintenance/alerts/{alert_id}/shelve", tags=["maintenance"])
    async def unshelve_alert(
        alert_id: str,
        who: Annotated[Principal, Depends(operator)],
        note: Annotated[str, Query(json_schema_extra={"maxLength": 4000})] = "",
    ) -> dict[str, Any]:
        """Bring a shelved alert back before its time is up."""
        action = valid(AlertAction, alert_id=alert_id, actor=who.subject, note=note)
        alert = await services.require_maintenance().unshelve_alert(action)
        await audit.record(services, who, "unshelve_alert", alert.alert_id, {"note": note})
        return alert_doc(alert)

    # -- GraphQL --------------------------------------------------------------------------
    async def graphql_context(connection: HTTPConnection) -> dict[str, Any]:
        principal = None
        if connection.scope["type"] == "http":
            header = connection.headers.get("authorization")
            browsing = (
                connection.scope.get("method") == "GET" and "query" not in connection.query_params
            )
            if header or not browsing:
                principal = await logins.graphql_principal(connection)
        return {"services": services, "principal": principal}

    class TransportWS(BaseGraphQLTransportWSHandler):
        """Authenticates in ``connection_init``: payload ``{"Authorization": "Bearer
        <jwt>"}`` (or ``{"token": "<jwt>"}``), or the session cookie with ``{"csrf_token":
        ...}``. A refused connection is closed with 4401 or 4403 and the reason.

        The rules of HTTP hold for the connection's whole life: when the token expires,
        or the dashboard session it was opened with ends (logged out, user disabled), the
        connection and its subscriptions are closed (4401); every operation counts
        against the token's rate (over it, the operation's error is ``rate_limited``); a
        message larger than ``max_body_bytes`` closes the connection (4413). A connection
        without ``connection_init`` is closed after ``ws_init_timeout_s`` (4408)."""

        expiry_task: asyncio.Task[None] | None = None

        async def handle_message(self, message: Any) -> None:
            if isinstance(message, dict) and message.get("type") == TOO_LARGE:
                services.counters["ws_413"] += 1
                reason = (
                    f"a message of {message['bytes']} bytes is over the limit of "
                    f"{services.settings.max_body_bytes}"
                )
                await self.websocket.close(code=4413, reason=reason)
                return
            await super().handle_message(message)

        async def handle_connection_init(self, message: Any) -> None:
            context = cast(dict[str, Any], self.context)
            try:
                principal = await logins.socket_principal(
                    context["request"], message.get("payload")
                )
            except ApiError as exc:
                services.counters[f"ws_{exc.status}"] += 1
                if self.connection_init_timeout_task:
                    self.connection_init_timeout_task.cancel()
                await self.websocket.close(code=4000 + exc.status, reason=exc.message[:120])
                return
            context["principal"] = principal
            await super().handle_connection_init(message)
            if self.connection_acknowledged and self.expiry_task is None:
                payload = message.get("payload")
                bearer = isinstance(payload, dict) and any(
                    payload.get(k) for k in ("Authorization", "authorization", "token")
                )
                cookie = None if bearer else context["request"].cookies.get(SESSION_COOKIE)
                self.expiry_task = asyncio.create_task(self.watch(principal, cookie))

        async def watch(self, principal: Principal, cookie: str | None) -> None:
            """Close the connection when its token expires or is revoked, or (a dashboard
            session's ``cookie``) when the session ends: checked every
            ``ws_session_recheck_s``."""
            while True:
                left = principal.expires_at - time.time()
                if left <= 0:
                    await self.close_expired()
                    return
                if cookie is None:  # a bearer token: until it expires or is revoked
                    await asyncio.sleep(min(left, services.settings.ws_session_recheck_s))
                    try:
                        services.refuse_revoked(principal)
                    except ApiError as exc:
                        services.counters["ws_revoked"] += 1
                        with contextlib.suppress(Exception):
                            await self.websocket.close(code=4401, reason=exc.message[:120])
                        return
                    continue
                await asyncio.sleep(min(left, services.settings.ws_session_recheck_s))
                try:
                    await logins.session(cookie)
                except ApiError as exc:
                    if exc.status != 401:
                        continue  # the database or the rate: try again at the next check
                    services.counters["ws_session_ended"] += 1
                    with contextlib.suppress(Exception):
                        await self.websocket.close(code=4401, reason=exc.message[:120])
                    return

        async def close_expired(self) -> None:
            services.counters["ws_expired"] += 1
            with contextlib.suppress(Exception):  # the client may be gone already
                await self.websocket.close(code=4401, reason=EXPIRED)

        async def handle_subscribe(self, message: Any) -> None:
            principal = cast(dict[str, Any], self.context).get("principal")
            if principal is not None:
                if time.time() >= principal.expires_at:
                    await self.close_expired()
                    return
                try:
                    services.limiter.check(principal.token_id)
                except ApiError as exc:
                    services.counters["ws_429"] += 1
                    error: Any = {"message": exc.message, "extensions": {"code": exc.code}}
                    await self.send_message(
                        {"id": message["id"], "type": "error", "payload": [error]}
                    )
                    return
            await super().handle_subscribe(message)

        async def shutdown(self) -> None:
            if self.expiry_task is not None:
                self.expiry_task.cancel()
            await super().shutdown()

        async def run_operation(self, operation: Any) -> None:
            """Subscriptions of people with at least the viewer role share one feed per
            query (:mod:`api.feeds`); anything else runs on its own."""
            principal = cast(dict[str, Any], self.context).get("principal")
            if (
                principal is None
                or not principal.allows(Role.VIEWER)
                or not operation.query.lstrip().startswith("subscription")
            ):
                await super().run_operation(operation)
                return
            key = key_of(operation.query, operation.variables, operation.operation_name)
            head = '{"id":' + json.dumps(operation.id) + ',"type":"next","payload":'
            try:
                async for kind, body in services.feeds.join(self.schema, self.context, key):
                    if kind == "error":
                        await self.send_message(
                            {"id": operation.id, "type": "error", "payload": body}
                        )
                        self.operations.pop(operation.id, None)
                        return
                    await self.websocket.ws.send_text(head + body + "}")  # type: ignore[attr-defined]
                await operation.send_operation_message({"id": operation.id, "type": "complete"})
            except (WebSocketDisconnect, RuntimeError):  # the client went away
                self.operations.pop(operation.id, None)

    class Router(GraphQLRouter):
        graphql_transport_ws_handler_class = TransportWS  # type: ignore[assignment]

        async def run(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            """strawberry's own refusals of an HTTP request (not JSON, no query, a mutation
            over GET...) in the API's JSON error shape, not as plain text."""
            try:
                return await super().run(request, *args, **kwargs)
            except GraphQLHTTPException as exc:
                if isinstance(request, Request):
                    return _json_error(ApiError(exc.status_code, "invalid_request", exc.reason))
                raise

        def decode_json(self, data: str | bytes) -> object:
            """A message over ``max_body_bytes`` is not decoded (HTTP bodies that large
            are refused before, by :class:`BodySizeLimit`)."""
            size = len(data) if isinstance(data, bytes) else len(data.encode())
            if size > services.settings.max_body_bytes:
                return {"type": TOO_LARGE, "bytes": size}
            return super().decode_json(data)

        def parse_json(self, data: str | bytes) -> Any:
            """A GraphQL request (and its ``variables``) is a JSON object, or a list of
            them: strawberry took any other JSON (``"AAA"``, ``3``, ``null``) for one, and
            a body not in UTF-8 for JSON, and failed on them (500)."""
            try:
                value = super().parse_json(data)
            except UnicodeDecodeError:
                raise GraphQLHTTPException(400, "the body is not UTF-8 (JSON)") from None
            if not isinstance(value, dict | list):
                raise GraphQLHTTPException(
                    400, f"expected a JSON object, got {type(value).__name__} ({value!r:.40})"
                )
            return value

    router = Router(
        schema,
        context_getter=graphql_context,
        subscription_protocols=("graphql-transport-ws",),
        graphql_ide="graphiql",
        multipart_uploads_enabled=False,
        connection_init_wait_timeout=timedelta(seconds=services.settings.ws_init_timeout_s),
    )
    app.include_router(router, prefix="/graphql")
    dashboard.mount(app)
    app.add_middleware(BodySizeLimit, max_bytes=services.settings.max_body_bytes)
    return app


class ShelveBody(BaseModel):
    """The body of ``POST /api/v1/maintenance/alerts/{alert_id}/shelve``."""

    # strict: JSON's true is not the number 1 (pydantic's lax mode took it for one)
    model_config = ConfigDict(extra="forbid", strict=True)

    minutes: Annotated[float, Field(gt=0, le=7 * 24 * 60, allow_inf_nan=False)]
    """At most the plant's ``alerting.max_shelve_minutes`` too (the service refuses more)."""
    reason: Annotated[
        str,
        Field(min_length=1, max_length=500, json_schema_extra={"pattern": f"[^{_SPACE[1:-2]}]"}),
    ]
    """Not only blanks (the service refuses them)."""


class ReplanBody(BaseModel):
    """The body of ``POST /api/v1/maintenance/replan`` (optional)."""

    model_config = ConfigDict(extra="forbid", strict=True)  # ``true`` is no number of hours

    horizon_hours: Annotated[float, Field(gt=0, le=24 * 31, allow_inf_nan=False)] = 168.0


def _split(values: list[str] | None) -> list[str]:
    """``?status=a&status=b`` or ``?status=a,b``."""
    return [v.strip() for value in values or () for v in value.split(",") if v.strip()]


async def start_services(settings: Settings, machines: Any, access: Any = None) -> Services:
    """The view (connected to NATS), the maintenance client (on the view's connection)
    and, with ``settings.database_url``, the history pool; :meth:`Services.stop` closes
    them."""
    view = await FleetView(
        machines, settings.nats_url, anomaly_replay_h=settings.anomaly_replay_h
    ).start()
    history = None
    maintenance = MaintenanceClient(view.nc, settings.maintenance_timeout_s)
    try:
        await maintenance.start()
        if settings.database_url:
            history = await History.open(settings.database_url)
    except BaseException:
        await maintenance.stop()
        await view.stop()
        raise
    return Services(
        settings=settings,
        view=view,
        authority=Authority(settings.secret),
        limiter=RateLimiter(settings.rate_per_s, settings.rate_burst),
        access=access,
        history=history,
        maintenance=maintenance,
    )
