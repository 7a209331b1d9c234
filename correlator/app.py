"""`pciehp-correlator`: the aiohttp service, its routes, flags and startup.

Routes: POST /api/v1/webhook, GET /api/v1/incidents[/{id}], GET /api/v1/openapi.json,
GET / and /incidents/{id} (HTML), /metrics, /-/healthy, /-/ready.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import logging
import socket
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from correlator import __version__
from correlator.config import Config, ConfigError, load
from correlator.diagnosis import DiagnosisTable
from correlator.incidents import Incident
from correlator.metrics import Metrics
from correlator.reconciler import Reconciler, Upstream
from correlator.sources.alertmanager import AlertmanagerClient, Pusher
from correlator.sources.prometheus import PrometheusSource
from correlator.store import Store, StoreError
from correlator.web import render_incident, render_index
from correlator.webhook import PayloadError, parse_body

log = logging.getLogger("correlator")
OPENAPI = Path(__file__).resolve().parent / "openapi.yml"
STATES = ("open", "resolved", "all")
# request body codings aiohttp decodes (Alertmanager sends none)
CONTENT_CODINGS = ("identity", "gzip", "deflate", "br")


@dataclass
class Settings:
    """Everything the service needs besides the YAML config: the command-line flags."""

    prometheus_url: str = "http://127.0.0.1:9090"
    alertmanager_urls: Sequence[str] = ("http://127.0.0.1:9093",)
    storage_path: str = "data/incidents.sqlite"
    external_url: str = "http://localhost:9861"
    bearer_token: str = ""


CONFIG_KEY = web.AppKey("config", Config)
SETTINGS_KEY = web.AppKey("settings", Settings)
TABLE_KEY = web.AppKey("table", DiagnosisTable)
METRICS_KEY = web.AppKey("metrics", Metrics)
STORE_KEY = web.AppKey("store", Store)
RECONCILER_KEY = web.AppKey("reconciler", Reconciler)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"status": "error", "error": message}, status=status, headers=headers)


def _json_media_type(header: str) -> bool:
    """`application/json`, with no charset or UTF-8's (what Alertmanager sends)."""
    kind, _, params = header.partition(";")
    if kind.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            return False
    return True


# --- handlers -----------------------------------------------------------------------------------


async def webhook(request: web.Request) -> web.Response:
    """Alertmanager webhook receiver (payload version 4)."""
    app = request.app
    metrics = app[METRICS_KEY]
    token = app[SETTINGS_KEY].bearer_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            metrics.webhooks.labels("unauthorized").inc()
            return _error(401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})
    limit = app[CONFIG_KEY].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        metrics.webhooks.labels("too_large").inc()
        return _error(413, f"body of {request.content_length} bytes exceeds the limit of {limit}")
    media = request.headers.get("Content-Type", "")
    coding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if not _json_media_type(media) or coding not in CONTENT_CODINGS:
        metrics.webhooks.labels("invalid").inc()
        return _error(
            415,
            "expected Content-Type application/json in UTF-8 and a Content-Encoding of "
            f"{', '.join(CONTENT_CODINGS)}; got {media!r} and {coding!r}",
        )
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        metrics.webhooks.labels("too_large").inc()
        return _error(413, f"body exceeds the limit of {limit} bytes")
    except web.RequestPayloadError as e:  # a body that cannot be decoded (Content-Encoding)
        metrics.webhooks.labels("invalid").inc()
        resp = _error(400, f"body cannot be read: {str(e).splitlines()[-1].strip()}")
        # the rest cannot be decoded either: close the connection after the answer, and mark
        # the body read so aiohttp does not try to skip the rest (and fail again)
        resp.force_close()
        request.content.feed_eof()
        return resp
    try:
        alerts = parse_body(body)
    except PayloadError as e:
        metrics.webhooks.labels("invalid").inc()
        return _error(400, f"invalid webhook payload: {e}")
    metrics.webhooks.labels("accepted").inc()
    out = app[RECONCILER_KEY].ingest_webhook(alerts)
    return web.json_response(
        {
            "status": "success",
            "data": {
                "accepted": out.accepted,
                "duplicate": out.duplicate,
                "stale": out.stale,
                "ignored": out.ignored,
            },
        }
    )


async def list_incidents(request: web.Request) -> web.Response:
    """Incidents as JSON, open first; `?state=open|resolved|all`, `?limit=N`."""
    state = request.query.get("state", "all")
    if state not in STATES:
        return _error(400, f"state: expected one of {', '.join(STATES)}")
    raw_limit = request.query.get("limit", "1000")
    if not raw_limit.isdigit() or int(raw_limit) < 1:
        return _error(400, "limit: expected a positive integer")
    rec = request.app[RECONCILER_KEY]
    items = rec.book.all()
    if state != "all":
        items = [i for i in items if i.is_open == (state == "open")]
    table = request.app[TABLE_KEY]
    data = [i.summary_json(table) for i in items[: int(raw_limit)]]
    return web.json_response({"status": "success", "data": data})


async def _find(request: web.Request) -> tuple[str, Incident | None]:
    """The incident named in the path: in memory, else from the history database."""
    rec = request.app[RECONCILER_KEY]
    iid = request.match_info["id"]
    inc = rec.book.get(iid)
    if inc is None:
        inc = await asyncio.to_thread(request.app[STORE_KEY].get, iid)
    return iid, inc


async def get_incident(request: web.Request) -> web.Response:
    """One incident with members and per-instance verdicts."""
    iid, inc = await _find(request)
    if inc is None:
        return _error(404, f"no incident with id {iid!r}")
    return web.json_response({"status": "success", "data": inc.detail_json(request.app[TABLE_KEY])})


async def index_page(request: web.Request) -> web.Response:
    """HTML list of incidents for on-call."""
    rec = request.app[RECONCILER_KEY]
    text = render_index(
        rec.book.all(), request.app[TABLE_KEY], request.app[SETTINGS_KEY].external_url
    )
    return web.Response(text=text, content_type="text/html")


async def incident_page(request: web.Request) -> web.Response:
    """HTML page of one incident (the pushed alert's generatorURL)."""
    iid, inc = await _find(request)
    if inc is None:
        return web.Response(status=404, text=f"no incident with id {iid!r}\n")
    text = render_incident(inc, request.app[TABLE_KEY], request.app[SETTINGS_KEY].external_url)
    return web.Response(text=text, content_type="text/html")


async def metrics_page(request: web.Request) -> web.Response:
    """Prometheus text exposition of the correlator's own metrics."""
    body = generate_latest(request.app[METRICS_KEY].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthy(request: web.Request) -> web.Response:
    """Liveness: the process serves HTTP."""
    return web.Response(text="pciehp-correlator is Healthy.\n")


async def ready(request: web.Request) -> web.Response:
    """Readiness: incidents restored and a first reconcile done."""
    if request.app[RECONCILER_KEY].ready:
        return web.Response(text="pciehp-correlator is Ready.\n")
    return web.Response(status=503, text="pciehp-correlator is not ready yet.\n")


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI 3 document of the HTTP API."""
    doc = yaml.safe_load(OPENAPI.read_text())
    doc["info"]["version"] = __version__
    return web.json_response(doc)


# --- application --------------------------------------------------------------------------------


def create_app(config: Config, settings: Settings) -> web.Application:
    """The aiohttp application; loops start with the app and stop with it."""
    table = DiagnosisTable.from_config(config)
    app = web.Application(client_max_size=config.max_body_bytes)
    app[CONFIG_KEY] = config
    app[SETTINGS_KEY] = settings
    app[TABLE_KEY] = table
    app[METRICS_KEY] = Metrics()
    app[STORE_KEY] = Store(settings.storage_path)
    app.cleanup_ctx.append(_lifecycle)
    app.router.add_post("/api/v1/webhook", webhook)
    app.router.add_get("/api/v1/incidents", list_incidents)
    app.router.add_get("/api/v1/incidents/{id}", get_incident)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/", index_page)
    app.router.add_get("/incidents/{id}", incident_page)
    app.router.add_get("/metrics", metrics_page)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    return app


def prune_interval(retention: float) -> float:
    """How often the history is pruned: retention/1000, between 1 s and 1 h (30d: 43 min)."""
    return min(3600.0, max(1.0, retention / 1000))


async def prune_history(app: web.Application) -> None:
    """Delete resolved incidents older than `storage.retention`, at start and periodically."""
    config, store, metrics = app[CONFIG_KEY], app[STORE_KEY], app[METRICS_KEY]
    book = app[RECONCILER_KEY].book
    while True:
        cutoff = time.time() - config.retention
        try:
            deleted = await asyncio.to_thread(store.prune, cutoff)
        except sqlite3.Error as e:
            log.warning("pruning the incident history failed, will retry: %s", e)
        else:
            book.forget_resolved_before(cutoff)
            metrics.pruned.inc(deleted)
            metrics.prune_runs.inc()
            if deleted:
                log.info("deleted %d resolved incident(s) older than storage.retention", deleted)
        await asyncio.sleep(prune_interval(config.retention))


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    config, settings = app[CONFIG_KEY], app[SETTINGS_KEY]
    session = aiohttp.ClientSession()
    t = config.timings
    upstreams = [
        Upstream(
            client := AlertmanagerClient(session, url, config.alertmanager_timeout),
            Pusher(client, t.push_ttl, t.retry_initial, t.retry_max),
        )
        for url in settings.alertmanager_urls
    ]
    prometheus = PrometheusSource(
        session,
        settings.prometheus_url,
        config.image_label,
        config.prometheus_selector,
        config.prometheus_timeout,
    )
    rec = Reconciler(
        config,
        app[TABLE_KEY],
        app[STORE_KEY],
        prometheus,
        upstreams,
        app[METRICS_KEY],
        settings.external_url,
    )
    rec.restore()
    app[RECONCILER_KEY] = rec
    tasks = [asyncio.create_task(rec.run(), name="reconcile")]
    tasks += [asyncio.create_task(u.pusher.run(), name=f"push {u.client.url}") for u in upstreams]
    tasks.append(asyncio.create_task(prune_history(app), name="prune history"))
    rec.trigger()
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await session.close()
    app[STORE_KEY].close()


# --- command line -------------------------------------------------------------------------------


def parse_listen_address(text: str) -> tuple[str | None, int]:
    """`host:port`, `:port` or `[v6]:port` to (host or None for all interfaces, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--web.listen-address: expected host:port, got {text!r}")
    host = host.strip("[]")
    return (host or None), int(port)


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="pciehp-correlator",
        description="Join host-side detach-timeout alerts with pciehp guest facts into one "
        "root-cause incident per VM image.",
    )
    p.add_argument("--config", help="YAML config file (default: built-in defaults)")
    p.add_argument("--web.listen-address", dest="listen", default=":9861")
    p.add_argument(
        "--web.external-url",
        dest="external_url",
        help="URL the correlator is reached at (incident links); default http://<host>:<port>",
    )
    p.add_argument("--prometheus.url", dest="prometheus", default="http://127.0.0.1:9090")
    p.add_argument(
        "--alertmanager.url",
        dest="alertmanagers",
        action="append",
        help="Alertmanager to read alerts from and push incidents to; repeat for an HA pair "
        "(default http://127.0.0.1:9093)",
    )
    p.add_argument("--storage.path", dest="storage", default="data/incidents.sqlite")
    p.add_argument(
        "--log.level",
        dest="log_level",
        default="info",
        choices=["debug", "info", "warning", "error"],
    )
    p.add_argument("--version", action="version", version=f"pciehp-correlator {__version__}")
    return p.parse_args(argv)


def bearer_token(config: Config) -> str:
    """The webhook's bearer token from `webhook.bearer_token_file` ("" when not configured)."""
    if not config.bearer_token_file:
        return ""
    try:
        token = Path(config.bearer_token_file).read_text().strip()
    except OSError as e:
        raise ConfigError(f"webhook.bearer_token_file: cannot read it: {e}") from e
    if not token:
        raise ConfigError("webhook.bearer_token_file: the file is empty")
    return token


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point."""
    args = _args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        host, port = parse_listen_address(args.listen)
        config = load(args.config)
        token = bearer_token(config)
        external = args.external_url or config.external_url
        if not external:
            external = f"http://{host or socket.gethostname()}:{port}"
        settings = Settings(
            prometheus_url=args.prometheus,
            alertmanager_urls=args.alertmanagers or ["http://127.0.0.1:9093"],
            storage_path=args.storage,
            external_url=external.rstrip("/"),
            bearer_token=token,
        )
        app = create_app(config, settings)
    except (ConfigError, StoreError, ValueError) as e:
        print(f"pciehp-correlator: {e}", file=sys.stderr)
        return 1
    log.info(
        "pciehp-correlator %s listening on %s, prometheus %s, alertmanager %s",
        __version__,
        args.listen,
        settings.prometheus_url,
        ", ".join(settings.alertmanager_urls),
    )
    web.run_app(app, host=host, port=port, print=None, access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
