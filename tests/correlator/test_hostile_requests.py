"""Every request body the correlator parses, made hostile, gets a 4xx and never a 5xx.

The POST endpoints come from `correlator/openapi.yml`; each gets deep nesting, huge numbers,
duplicate keys, a wrong type at every position of a valid payload, invalid UTF-8, empty bodies,
wrong content types and broken encodings, over real sockets (aiohttp test server). Afterwards
the service still serves and no incident came out of any of it.
"""

from __future__ import annotations

import asyncio
import copy
import gzip
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from aiohttp.test_utils import TestClient

from correlator.app import OPENAPI, Settings, create_app
from correlator.config import from_dict
from tests.correlator.support import FAST, detach_alert, webhook_payload

DEAD = "http://127.0.0.1:9"  # nothing listens: parsing needs no Prometheus or Alertmanager
JSON = {"Content-Type": "application/json"}
SPEC = yaml.safe_load(OPENAPI.read_text())
POSTS = [path for path, ops in SPEC["paths"].items() if "post" in ops]
GET_ONLY = [path.replace("{id}", "x") for path, ops in SPEC["paths"].items() if "post" not in ops]
VALID = webhook_payload([detach_alert("uuid-1", "img-1", host="cmp-1")])
VALID["groupLabels"] = {"alertname": "NovaDeviceDetachFailed"}
VALID["truncatedAlerts"] = 0
HUGE_INT = b"9" * 5000  # more digits than int() takes (4300)


def test_the_webhook_is_the_only_post_endpoint_so_far():
    """If the document gains a POST endpoint, BODIES must be sent to it too (POSTS)."""
    assert POSTS == ["/api/v1/webhook"]


def positions(doc: object, path: tuple = ()) -> Iterator[tuple]:
    """Every path into a JSON document (keys and list indices), the root excluded."""
    items = (
        doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    )
    for k, v in items:
        yield (*path, k)
        yield from positions(v, (*path, k))


def replaced(doc: object, path: tuple, value: object) -> object:
    out = copy.deepcopy(doc)
    node = out
    for k in path[:-1]:
        node = node[k]  # type: ignore[index]
    node[path[-1]] = value  # type: ignore[index]
    return out


WRONG = [None, True, 0, -1.5, "text", [], {}, [{}], {"a": {}}]


def wrong_types() -> Iterator[tuple[str, bytes]]:
    """A valid payload with each position replaced by each value of another JSON type."""
    for path in positions(VALID):
        node: object = VALID
        for k in path:
            node = node[k]  # type: ignore[index]
        for value in WRONG:
            same_type = type(value) is type(node)
            if same_type and (not isinstance(node, dict | list) or not value):
                continue  # a value of the same type, or an empty list or object, can be valid
            yield f"{path}={value!r}", json.dumps(replaced(VALID, path, value)).encode()
        for number in (b"1e999", b"-1e999", HUGE_INT, b"0." + b"1" * 5000):
            marker = "__NUMBER__"
            text = json.dumps(replaced(VALID, path, marker)).encode()
            yield f"{path}={number[:12]!r}", text.replace(f'"{marker}"'.encode(), number)


def structural() -> Iterator[tuple[str, bytes]]:
    valid = json.dumps(VALID).encode()
    yield "object nested 5000 deep", b'{"a":' * 5000 + b"1" + b"}" * 5000
    yield "array nested 100000 deep", b"[" * 100000 + b"]" * 100000
    yield "alerts nested deep", valid.replace(b'"alerts": [', b'"alerts": [' + b"[" * 50000, 1)
    yield (
        "labels nested deep",
        json.dumps(
            replaced(VALID, ("alerts", 0, "labels", "host"), json.loads("[" * 500 + "]" * 500))
        ).encode(),
    )
    yield "duplicate top-level key", b'{"version":"4","version":"4","alerts":[]}'
    yield "duplicate alert key", valid.replace(b'"status": "firing",', b'"status": "firing",' * 2)
    yield "duplicate label", valid.replace(b'"host": "cmp-1"', b'"host": "cmp-1", "host": "x"')
    yield "NaN", valid.replace(b'"truncatedAlerts": 0', b'"truncatedAlerts": NaN')
    yield "Infinity", valid.replace(b'"truncatedAlerts": 0', b'"truncatedAlerts": -Infinity')
    yield "huge integer", valid.replace(b'"truncatedAlerts": 0', b'"truncatedAlerts": ' + HUGE_INT)
    yield "empty body", b""
    yield "whitespace", b" \n\t "
    yield "null", b"null"
    yield "a list", b"[]"
    yield "a string", b'"4"'
    yield "truncated", valid[: len(valid) // 2]
    yield "trailing garbage", valid + b"}"
    yield "two documents", valid + valid
    yield "invalid UTF-8 in a label", valid.replace(b"cmp-1", b"cmp-\xff\xfe")
    yield "overlong UTF-8", valid.replace(b"cmp-1", b"cmp-\xc0\xaf")
    yield "encoded surrogate", valid.replace(b"cmp-1", b"cmp-\xed\xa0\x80")
    yield "lone surrogate escape", valid.replace(b"cmp-1", b"cmp-\\udc80")
    yield "UTF-16", json.dumps(VALID).encode("utf-16")
    yield "UTF-8 BOM", b"\xef\xbb\xbf" + valid
    yield "NUL bytes", b"\x00" * 1000
    yield "control characters", valid.replace(b"cmp-1", b"cmp-\x01")


async def start(aiohttp_client, tmp_path: Path) -> TestClient:
    config = from_dict({**FAST, "webhook": {"max_body_bytes": 1_000_000}})
    settings = Settings(DEAD, [DEAD], str(tmp_path / "db.sqlite"), "http://correlator.example")
    return await aiohttp_client(create_app(config, settings))


async def statuses(client: TestClient, bodies, headers=JSON) -> dict[str, int]:
    """Status of each POST to each POST endpoint, by case."""
    out = {}
    for path in POSTS:
        for name, body in bodies:
            resp = await client.post(path, data=body, headers=headers)
            await resp.read()
            out[f"{path} {name}"] = resp.status
    return out


async def still_serving_and_nothing_came_of_it(client: TestClient) -> None:
    assert (await client.get("/-/healthy")).status == 200
    ok = await client.post("/api/v1/webhook", data=json.dumps(VALID), headers=JSON)
    assert ok.status == 200, await ok.text()
    data = (await (await client.get("/api/v1/incidents")).json())["data"]
    assert {i["image_id"] for i in data} <= {"img-1"}


async def test_a_wrong_type_or_number_at_every_position_is_a_400(aiohttp_client, tmp_path):
    client = await start(aiohttp_client, tmp_path)
    cases = list(wrong_types())
    assert len(cases) >= 300
    got = await statuses(client, cases)
    # every replacement breaks the payload: whatever the position, the answer is 400
    assert {k: v for k, v in got.items() if v != 400} == {}
    await still_serving_and_nothing_came_of_it(client)


async def test_malformed_documents_and_encodings_are_400(aiohttp_client, tmp_path):
    client = await start(aiohttp_client, tmp_path)
    got = await statuses(client, list(structural()))
    assert {k: v for k, v in got.items() if v != 400} == {}
    await still_serving_and_nothing_came_of_it(client)


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
        "application/json; charset=utf-16",
        "application/jsonx",
        "json",
        "",
    ],
)
async def test_a_body_that_does_not_say_it_is_json_is_415(aiohttp_client, tmp_path, content_type):
    client = await start(aiohttp_client, tmp_path)
    headers = {} if content_type is None else {"Content-Type": content_type}
    body = json.dumps(VALID).encode()
    got = await statuses(client, [("valid payload", body), ("no JSON", b"\xff")], headers)
    assert set(got.values()) == {415}, got
    for ok in ("application/json; charset=UTF-8", 'Application/JSON; charset="utf-8"'):
        assert (await statuses(client, [("ok", body)], {"Content-Type": ok})).popitem()[1] == 200


async def test_broken_transfer_and_content_encodings_are_4xx(aiohttp_client, tmp_path):
    client = await start(aiohttp_client, tmp_path)
    body = json.dumps(VALID).encode()
    for encoding, status in (("gzip", 400), ("deflate", 400), ("br", 400), ("x-unknown", 415)):
        got = await statuses(client, [(encoding, body)], {**JSON, "Content-Encoding": encoding})
        assert set(got.values()) == {status}, got
    packed = [("gzip", gzip.compress(body))]
    assert set((await statuses(client, packed, {**JSON, "Content-Encoding": "gzip"})).values()) == {
        200
    }
    # raw requests an HTTP client library would not send
    raw = [
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: -5\r\n\r\n{}",
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 99999999999999999999999\r\n\r\n{}",
    ]
    for path in POSTS:
        for request in raw:
            status = await asyncio.to_thread(raw_status, client, request % path.encode())
            assert 400 <= status < 500, (request, status)
    await still_serving_and_nothing_came_of_it(client)


def raw_status(client: TestClient, request: bytes) -> int:
    """Send bytes to the test server and read the status code of its answer."""
    with socket.create_connection((client.host, client.port), timeout=10) as s:
        s.sendall(request)
        head = s.recv(64)
    return int(head.split(b" ", 2)[1])


async def test_posting_to_an_endpoint_without_post_is_405_whatever_the_body(
    aiohttp_client, tmp_path
):
    client = await start(aiohttp_client, tmp_path)
    for path in GET_ONLY:
        for body in (b"", b"[" * 100000, HUGE_INT, b"\xff"):
            resp = await client.post(path, data=body, headers=JSON)
            assert resp.status == 405, (path, resp.status)
