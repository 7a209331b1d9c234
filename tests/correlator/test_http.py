"""The HTTP surface in-process (aiohttp test server, real sockets): webhook auth, size limit and
validation, the incidents API, the HTML page's escaping, health, metrics, and an OpenAPI
document that matches what the API returns."""

from __future__ import annotations

import asyncio
import json
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from correlator.app import RECONCILER_KEY, Settings, bearer_token, create_app
from correlator.config import from_dict
from tests.correlator.conftest import Fleet
from tests.correlator.support import FAST, detach_alert, webhook_payload

TOKEN = "s3cret-token"
DEAD_AM = "http://127.0.0.1:9"  # nothing listens: a webhook-only deployment


async def start(aiohttp_client, tmp_path: Path, fleet: Fleet, **extra) -> TestClient:
    doc = {**FAST, **extra}
    config = from_dict(doc)
    settings = Settings(
        prometheus_url=fleet.prometheus.url,
        alertmanager_urls=[DEAD_AM],
        storage_path=str(tmp_path / "incidents.sqlite"),
        external_url="http://correlator.example:9861",
        bearer_token=bearer_token(config),
    )
    client = await aiohttp_client(create_app(config, settings))
    await wait_for(client, lambda: client.get("/-/ready"), lambda r: r.status == 200)
    return client


async def wait_for(client, request, check, timeout: float = 20.0):
    """Poll an HTTP request until `check(response)` holds (asyncio-friendly wait_until)."""
    deadline = time.monotonic() + timeout
    while True:
        resp = await request()
        if check(resp):
            return resp
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met; last status {resp.status}")
        await asyncio.sleep(0.05)


async def poll_incidents(client, check, query: str = "", timeout: float = 20.0) -> list[dict]:
    """Poll GET /api/v1/incidents until `check(data)` holds; returns the data."""
    deadline = time.monotonic() + timeout
    while True:
        data = (await (await client.get("/api/v1/incidents" + query)).json())["data"]
        if check(data):
            return data
        if time.monotonic() > deadline:
            raise TimeoutError(f"incidents never satisfied the check: {data}")
        await asyncio.sleep(0.05)


async def incidents(client) -> list[dict]:
    return (await (await client.get("/api/v1/incidents")).json())["data"]


async def test_webhook_requires_the_bearer_token_when_configured(aiohttp_client, tmp_path, fleet):
    (tmp_path / "token").write_text(TOKEN + "\n")
    client = await start(
        aiohttp_client, tmp_path, fleet, webhook={"bearer_token_file": str(tmp_path / "token")}
    )
    payload = webhook_payload([detach_alert(fleet.guest("aspm-1"), "img-auth", host="h")])
    resp = await client.post("/api/v1/webhook", json=payload)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await resp.json())["error"] == "missing or wrong bearer token"
    resp = await client.post(
        "/api/v1/webhook", json=payload, headers={"Authorization": "Bearer wrong"}
    )
    assert resp.status == 401
    assert await incidents(client) == []
    resp = await client.post(
        "/api/v1/webhook", json=payload, headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert resp.status == 200 and (await resp.json())["data"]["accepted"] == 1
    metrics = await (await client.get("/metrics")).text()
    assert 'pciehp_correlator_webhooks_received_total{result="unauthorized"} 2.0' in metrics
    assert 'pciehp_correlator_webhooks_received_total{result="accepted"} 1.0' in metrics


async def test_oversized_and_malformed_webhooks_change_nothing(aiohttp_client, tmp_path, fleet):
    client = await start(aiohttp_client, tmp_path, fleet, webhook={"max_body_bytes": 4000})
    guests = [fleet.guest("aspm-1"), fleet.guest("aspm-2")]
    many = webhook_payload(
        [detach_alert(g, "img-x", host=f"h{i}") for i in range(10) for g in guests]
    )
    resp = await client.post("/api/v1/webhook", data=json.dumps(many))
    assert resp.status == 413
    assert "exceeds the limit of 4000" in (await resp.json())["error"]

    good = webhook_payload([detach_alert(guests[0], "img-x", host="h")])
    bad = json.loads(json.dumps(good))
    bad["alerts"].append(dict(bad["alerts"][0], status="pending"))
    resp = await client.post("/api/v1/webhook", json=bad)
    assert resp.status == 400
    assert (await resp.json()) == {
        "status": "error",
        "error": 'invalid webhook payload: alerts[1].status: expected "firing" or "resolved", '
        "got 'pending'",
    }
    resp = await client.post(
        "/api/v1/webhook", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400 and "body is not JSON" in (await resp.json())["error"]

    rec = client.server.app[RECONCILER_KEY]
    before = rec.reconciles
    await wait_for(client, lambda: client.get("/-/ready"), lambda r: rec.reconciles >= before + 2)
    assert len(rec.inbox) == 0 and await incidents(client) == []
    metrics = await (await client.get("/metrics")).text()
    assert 'pciehp_correlator_webhooks_received_total{result="too_large"} 1.0' in metrics
    assert 'pciehp_correlator_webhooks_received_total{result="invalid"} 2.0' in metrics


class PageParts(HTMLParser):
    """The elements, attribute values and text of a page, as a browser would decode them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [f"{k}={v}" for k, v in attrs]

    def handle_data(self, data: str) -> None:
        self.text.append(data)


async def test_labels_with_markup_and_quotes_are_text_on_the_pages_never_markup(
    aiohttp_client, tmp_path, fleet
):
    """Every label the page shows, and the image in the incident's attributes, carries `<script>`
    and `"`: the pages show them as text and no element or attribute comes out of them."""
    client = await start(aiohttp_client, tmp_path, fleet)
    evil = '"><script>alert("x")</script><b a="'
    alert = detach_alert(f"uuid-{evil}", f"img-{evil}", host=f"host-{evil}", device=f"dev-{evil}")
    alert["labels"]["alertname"] = f"VolumeDetachTimeout{evil}"
    resp = await client.post("/api/v1/webhook", json=webhook_payload([alert]))
    assert resp.status == 200
    (inc,) = await poll_incidents(client, lambda d: bool(d), "?state=open")
    assert inc["image_id"] == f"img-{evil}"
    for path in ("/", f"/incidents/{inc['id']}"):
        page = await client.get(path)
        html = await page.text()
        parts = PageParts(html)
        assert "script" not in parts.tags and "b" not in parts.tags, path
        assert not [a for a in parts.attrs if "alert(" in a], path
        text = "".join(parts.text)
        assert f"img-{evil}" in text
        if path != "/":
            for value in ("uuid-", "host-", "dev-", "VolumeDetachTimeout"):
                assert f"{value}{evil}" in text, value
        assert '"><script>' not in html and "&#34;&gt;&lt;script&gt;" in html


async def test_incident_api_and_an_escaped_html_page(aiohttp_client, tmp_path, fleet):
    client = await start(aiohttp_client, tmp_path, fleet)
    evil = '<script>alert("x")</script>'
    alerts = [
        detach_alert(g, evil, host=f"<b>h{i}</b>") for i, g in enumerate(fleet.image("img-aspm"))
    ]
    resp = await client.post("/api/v1/webhook", json=webhook_payload(alerts))
    assert resp.status == 200

    data = await poll_incidents(
        client, lambda d: bool(d) and d[0]["root_cause"] == "pcie_aspm_off", "?state=open"
    )
    inc = data[0]
    # The healthy guest of the image is host-side: its alert joins its host's incident.
    assert inc["image_id"] == evil and inc["counts"]["instances"] == 3

    detail = await client.get(f"/api/v1/incidents/{inc['id']}")
    assert detail.status == 200
    body = (await detail.json())["data"]
    assert len(body["members"]) == 3 and len(body["instances"]) == 4

    for path in ("/", f"/incidents/{inc['id']}"):
        page = await client.get(path)
        assert page.status == 200 and page.content_type == "text/html"
        html = await page.text()
        assert "<script>" not in html and "<b>h" not in html
        assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in html
        assert (
            'href="https://github.com/pciehp-watch/pciehp-watch/blob/main/alerts/runbooks/' in html
        )
        assert "Counter-evidence" in html and "kernel command line has pcie_aspm=off" in html

    assert (await client.get("/api/v1/incidents/nope")).status == 404
    assert (await client.get("/incidents/nope")).status == 404
    assert (await client.get("/api/v1/incidents?state=open&limit=0")).status == 400
    assert (await client.get("/api/v1/incidents?state=closed")).status == 400
    resolved = await (await client.get("/api/v1/incidents?state=resolved")).json()
    assert resolved == {"status": "success", "data": []}


async def test_health_readiness_and_metrics(aiohttp_client, tmp_path, fleet):
    client = await start(aiohttp_client, tmp_path, fleet)
    assert (await client.get("/-/healthy")).status == 200
    assert await (await client.get("/-/ready")).text() == "pciehp-correlator is Ready.\n"
    text = await (await client.get("/metrics")).text()
    for name in (
        'pciehp_correlator_build_info{version="0.1.0"} 1.0',
        "pciehp_correlator_reconcile_duration_seconds_count",
        "pciehp_correlator_last_reconcile_timestamp_seconds",
        f'pciehp_correlator_alertmanager_errors_total{{alertmanager="{DEAD_AM}"}}',
        f'pciehp_correlator_push_queue_length{{alertmanager="{DEAD_AM}"}} 0.0',
        "pciehp_correlator_prometheus_queries_per_reconcile 0.0",
    ):
        assert name in text, name


# --- OpenAPI ------------------------------------------------------------------------------------


def resolve(schema: dict, spec: dict) -> dict:
    """Follow a $ref to its component schema."""
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def properties(schema: dict, spec: dict) -> set[str]:
    """Every property a schema documents, through allOf."""
    schema = resolve(schema, spec)
    names = set(schema.get("properties", {}))
    for part in schema.get("allOf", []):
        names |= properties(part, spec)
    return names


def conforms(doc: object, schema: dict, spec: dict, where: str = "$", strict: bool = True) -> list:
    """Errors of `doc` against an OpenAPI 3.0 schema (the subset the document uses)."""
    schema = resolve(schema, spec)
    errors: list[str] = []
    for part in schema.get("allOf", []):
        errors += conforms(doc, part, spec, where, strict=False)
    if doc is None:
        return errors if schema.get("nullable") or "type" not in schema else [f"{where}: null"]
    kind = schema.get("type")
    types = {"object": dict, "array": list, "string": str, "boolean": bool}
    if kind == "integer" and (not isinstance(doc, int) or isinstance(doc, bool)):
        errors.append(f"{where}: not an integer")
    elif kind in types and not isinstance(doc, types[kind]):
        errors.append(f"{where}: not {kind}")
    if "enum" in schema and doc not in schema["enum"]:
        errors.append(f"{where}: {doc!r} not in {schema['enum']}")
    if isinstance(doc, dict):
        errors += [f"{where}: missing {k}" for k in schema.get("required", []) if k not in doc]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for k, v in doc.items():
            if k in props:
                errors += conforms(v, props[k], spec, f"{where}.{k}")
            elif isinstance(extra, dict):
                errors += conforms(v, extra, spec, f"{where}.{k}")
        known = properties(schema, spec)
        if strict and known:
            errors += [f"{where}: undocumented {k}" for k in doc if k not in known]
    if isinstance(doc, list) and "items" in schema:
        for i, item in enumerate(doc):
            errors += conforms(item, schema["items"], spec, f"{where}[{i}]")
    return errors


async def test_openapi_document_matches_routes_and_responses(aiohttp_client, tmp_path, fleet):
    client = await start(aiohttp_client, tmp_path, fleet)
    spec = await (await client.get("/api/v1/openapi.json")).json()
    assert spec["openapi"].startswith("3.")
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in client.server.app.router.routes()
        if r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
    assert routes == documented

    def response_schema(path: str, method: str, status: int) -> dict:
        content = spec["paths"][path][method]["responses"][str(status)]["content"]
        return content["application/json"]["schema"]

    alerts = [
        detach_alert(g, "img-api", host=f"h{i}") for i, g in enumerate(fleet.image("img-aspm"))
    ]
    resp = await client.post("/api/v1/webhook", json=webhook_payload(alerts))
    assert conforms(await resp.json(), response_schema("/api/v1/webhook", "post", 200), spec) == []
    bad = await client.post("/api/v1/webhook", json={"version": "4"})
    assert conforms(await bad.json(), response_schema("/api/v1/webhook", "post", 400), spec) == []
    payload_schema = spec["paths"]["/api/v1/webhook"]["post"]["requestBody"]["content"][
        "application/json"
    ]["schema"]
    assert conforms(webhook_payload(alerts), payload_schema, spec) == []

    await poll_incidents(client, lambda d: bool(d) and d[0]["root_cause"] == "pcie_aspm_off")
    body = await (await client.get("/api/v1/incidents")).json()
    assert conforms(body, response_schema("/api/v1/incidents", "get", 200), spec) == []
    one = await (await client.get(f"/api/v1/incidents/{body['data'][0]['id']}")).json()
    assert conforms(one, response_schema("/api/v1/incidents/{id}", "get", 200), spec) == []
    missing = await (await client.get("/api/v1/incidents/x")).json()
    assert conforms(missing, response_schema("/api/v1/incidents/{id}", "get", 404), spec) == []


def test_token_files_that_are_missing_or_empty_are_config_errors(tmp_path: Path):
    from correlator.config import ConfigError

    with pytest.raises(ConfigError, match=r"webhook\.bearer_token_file: cannot read it"):
        bearer_token(from_dict({"webhook": {"bearer_token_file": str(tmp_path / "none")}}))
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="the file is empty"):
        bearer_token(from_dict({"webhook": {"bearer_token_file": str(tmp_path / "empty")}}))
    assert bearer_token(from_dict({})) == ""


@pytest.mark.parametrize("address", ["9861", "host:port", ":70000"])
def test_bad_listen_addresses_are_refused(address):
    from correlator.app import parse_listen_address

    with pytest.raises(ValueError, match=r"--web\.listen-address"):
        parse_listen_address(address)
    assert parse_listen_address(":9861") == (None, 9861)
    assert parse_listen_address("[::1]:9861") == ("::1", 9861)
