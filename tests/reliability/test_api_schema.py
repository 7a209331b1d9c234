"""API fuzzing: schemathesis generates requests from the correlator's own OpenAPI document and
sends them to a real correlator process on loopback; no answer may be a 5xx, every answer must
match the document (status code, content type, body schema, headers), and no counter of the
correlator ever decreases."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
import yaml
from hypothesis import HealthCheck, settings
from prometheus_client.parser import text_string_to_metric_families

from tests.correlator.support import Correlator, detach_alert, webhook_payload
from tests.support import servers

DOC = Path(__file__).resolve().parents[2] / "correlator" / "openapi.yml"
DEAD = "http://127.0.0.1:9"  # nothing listens: Prometheus and Alertmanager both unreachable
schema = schemathesis.openapi.from_path(DOC)


@pytest.fixture(scope="module")
def correlator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Correlator]:
    """A correlator with two incidents (so the id paths have something to find)."""
    corr = Correlator(tmp_path_factory.mktemp("schema"), DEAD, [DEAD])
    corr.start()
    try:
        alerts = [detach_alert(f"uuid-{i}", f"img-{i % 2}", host="h") for i in range(4)]
        assert corr.post_webhook(webhook_payload(alerts))[0] == 200
        servers.wait_until(lambda: len(corr.incidents()) == 2, what="two incidents")
        yield corr
    finally:
        corr.stop()


@schema.parametrize()
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_every_answer_matches_the_document_and_none_is_a_5xx(case, correlator, counters):
    response = case.call_and_validate(base_url=correlator.url, timeout=10)
    assert response.status_code < 500, response.text[:500]
    # Whatever was sent, no counter of the correlator ever goes down within the process.
    now = _counters(correlator)
    assert len(now) > 10
    for key, value in counters.items():
        assert now.get(key, 0.0) >= value, key
    counters.update(now)


@pytest.fixture(scope="module")
def counters() -> dict[tuple, float]:
    """The last value seen of every counter sample, across the generated requests."""
    return {}


def _counters(corr: Correlator) -> dict[tuple, float]:
    _, body = servers.http_get(corr.url + "/metrics")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.type in ("counter", "histogram"):
            for s in family.samples:
                if s.name.endswith(("_total", "_count", "_bucket", "_sum")):
                    out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_served_document_is_the_file(correlator):
    served = correlator.get("/api/v1/openapi.json")
    assert served == json.loads(json.dumps(yaml.safe_load(DOC.read_text())))
