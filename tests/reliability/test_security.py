"""Security: hostile label values through real Alertmanager into the correlator and back out
(HTML page, incident alert), webhook limits and encodings on a real correlator process, and the
exporter run as `nobody` on this machine's real /proc and /sys compared with root."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.correlator.support import (
    ROOT,
    Correlator,
    detach_alert,
    post_alerts,
    root_causes,
    wait_incident,
    webhook_payload,
)
from tests.support import servers

SCRIPT = '<script>alert("pwn")</script>'
HOSTILE_IMAGE = f"{SCRIPT}&amp;'img'"
HOSTILE_HOST = '"><img src=x onerror=alert(1)>'
# What non-UTF-8 bytes become once Alertmanager (Go) has decoded them: U+FFFD; plus an RTL
# override that could disguise text on the page.
HOSTILE_UUID = "\u202egnp.exe\ufffd\ufffd-uuid"
LONG_DEVICE = "v" * 4000


def post_raw(url: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    """POST raw bytes; returns (status, decoded JSON answer)."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_hostile_label_values_are_escaped_on_the_page_and_kept_exact_in_alertmanager(
    make_stack: Callable,
):
    stack = make_stack()
    corr = stack.correlator
    alerts = [
        detach_alert(HOSTILE_UUID, HOSTILE_IMAGE, host=HOSTILE_HOST, device=LONG_DEVICE),
        detach_alert("plain-uuid", HOSTILE_IMAGE, host="cmp-1"),
    ]
    post_alerts(stack.am_url, alerts)
    inc = wait_incident(corr, HOSTILE_IMAGE, root_cause="no_guest_data")
    assert inc["counts"]["alerts"] == 2

    # Alertmanager holds the incident alert with the label exactly as sent: no mangling, no
    # double escaping, annotations plain text carrying the value verbatim.
    rc = servers.wait_until(lambda: root_causes(stack.am_url, HOSTILE_IMAGE), what="root cause")
    assert len(rc) == 1
    assert rc[0]["labels"]["image_id"] == HOSTILE_IMAGE
    assert f"of image {HOSTILE_IMAGE};" in rc[0]["annotations"]["description"]
    assert "&lt;" not in json.dumps(rc[0]["annotations"])

    # generatorURL is a plain URL: the incident id, never the hostile text, and it resolves.
    url = rc[0]["generatorURL"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/incidents/[A-Za-z0-9._~%-]+", url), url
    pages = {"index": servers.http_get(corr.url + "/"), "incident": servers.http_get(url)}
    for name, (status, body) in pages.items():
        assert status == 200, name
        text = body.decode()
        for raw in (SCRIPT, "<img src=x", HOSTILE_HOST):
            assert raw not in text, f"{name} page carries {raw!r} unescaped"
        assert "&lt;script&gt;alert(&#34;pwn&#34;)&lt;/script&gt;&amp;amp;&#39;img&#39;" in text
    incident_page = pages["incident"][1].decode()
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;" in incident_page
    assert "\u202egnp.exe\ufffd\ufffd-uuid" in incident_page  # shown as text, escaped context
    # The JSON API returns the values verbatim (JSON-encoded, not HTML-escaped).
    detail = corr.incident(inc["id"])
    assert {m["instance_uuid"] for m in detail["members"]} == {HOSTILE_UUID, "plain-uuid"}


def test_webhook_limits_and_encodings_give_clear_errors_and_change_nothing(tmp_path: Path):
    dead = "http://127.0.0.1:9"
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config = {
        "timings": {"reconcile_interval": "1s", "webhook_debounce": "50ms"},
        "webhook": {"bearer_token_file": str(token), "max_body_bytes": 65536},
    }
    corr = Correlator(tmp_path / "corr", dead, [dead], config).start()
    hook = corr.url + "/api/v1/webhook"
    auth = {"Authorization": "Bearer s3cret"}
    try:
        good = webhook_payload([detach_alert("u-1", "img-limits", host="h")])
        cases: list[tuple[bytes, dict[str, str], int, str]] = [
            (json.dumps(good).encode(), {}, 401, "missing or wrong bearer token"),
            (json.dumps(good).encode(), {"Authorization": "Basic czNjcmV0"}, 401, "bearer"),
            (json.dumps(good).encode(), {"Authorization": "Bearer s3cret2"}, 401, "bearer"),
            (b"x" * 70000, auth, 413, "exceeds the limit of 65536"),
            (json.dumps(good).encode("utf-16"), auth, 400, "body is not JSON"),
            (json.dumps(good).encode().replace(b"u-1", b"u-\xff\xfe"), auth, 400, "not JSON"),
        ]
        surrogate = json.dumps(good).replace("u-1", "u-\\udc80").encode()
        cases.append((surrogate, auth, 400, "alerts[0].labels.instance_uuid: not valid UTF-8"))
        long_label = json.loads(json.dumps(good))
        long_label["alerts"][0]["labels"]["image_id"] = "i" * 5000
        cases.append((json.dumps(long_label).encode(), auth, 400, "alerts[0].labels.image_id"))
        many = json.loads(json.dumps(good))
        many["alerts"][0]["labels"].update({f"x{i}": "v" for i in range(80)})
        cases.append((json.dumps(many).encode(), auth, 400, "more than the limit of 64"))
        for body, headers, want, reason in cases:
            status, answer = post_raw(hook, body, headers)
            assert status == want, (reason, answer)
            assert answer["status"] == "error" and reason.lower() in answer["error"].lower()
        # Nothing above changed state: the first valid delivery is new.
        status, answer = post_raw(hook, json.dumps(good).encode(), auth)
        assert status == 200 and answer["data"]["accepted"] == 1
        wait_incident(corr, "img-limits")
        assert [i["image_id"] for i in corr.incidents()] == ["img-limits"]
        assert corr.metric("pciehp_correlator_webhooks_received_total", result="unauthorized") == 3
        assert corr.metric("pciehp_correlator_webhooks_received_total", result="too_large") == 1
        assert corr.metric("pciehp_correlator_webhooks_received_total", result="invalid") == 5
    finally:
        corr.stop()


# --- the exporter without root ------------------------------------------------------------------

# Imports first (the interpreter may live where `nobody` cannot read), then drop to nobody.
AS_NOBODY = """
import os, sys
import exporter.cli as cli
os.setgroups([]); os.setgid(65534); os.setuid(65534)
assert os.geteuid() == 65534 and not os.access("/root", os.R_OK)
sys.exit(cli.main(sys.argv[1:]))
"""


def run_exporter(as_nobody: bool) -> tuple[int, str, str]:
    """One `--once` scrape of this machine's real /proc and /sys; (rc, stdout, stderr)."""
    argv = (
        [sys.executable, "-c", AS_NOBODY] if as_nobody else [sys.executable, "-m", "exporter.cli"]
    )
    res = subprocess.run(
        [*argv, "--once"], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    return res.returncode, res.stdout, res.stderr


def samples(text: str, name: str) -> dict[str, float]:
    """Label string -> value for one metric name in exposition text."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(\{{.*\}})? (\S+)", line)
        if m:
            out[m.group(1) or ""] = float(m.group(2))
    return out


def test_exporter_as_nobody_serves_every_collector_and_says_what_it_cannot_see():
    assert os.geteuid() == 0, "the comparison needs root to drop privileges"
    rc_root, out_root, _ = run_exporter(as_nobody=False)
    rc_nobody, out_nobody, err_nobody = run_exporter(as_nobody=True)
    assert rc_root == 0 and rc_nobody == 0, err_nobody
    ok_root = samples(out_root, "pciehp_collector_success")
    ok_nobody = samples(out_nobody, "pciehp_collector_success")
    assert set(ok_nobody) == set(ok_root) and len(ok_root) >= 7
    # Whatever nobody cannot read is named on stderr, once per collector.
    for labels, value in ok_nobody.items():
        collector = re.search(r'collector="([^"]+)"', labels).group(1)
        if value == 0:
            assert f"collector {collector}:" in err_nobody, (collector, err_nobody)
    # The same ports are seen (sysfs topology is world-readable).
    assert samples(out_nobody, "pciehp_port_info") == samples(out_root, "pciehp_port_info")
    # /dev/kmsg: with kernel.dmesg_restrict=1 only CAP_SYSLOG may read it; the exporter says so.
    restrict = Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() == "1"
    up = samples(out_nobody, "pciehp_kernel_log_reader_up")[""]
    if restrict:
        assert up == 0 and ok_nobody['{collector="kernel_log"}'] == 0
        assert "kernel log not readable: /dev/kmsg: Operation not permitted" in err_nobody
    else:
        assert up == 1 and ok_nobody['{collector="kernel_log"}'] == 1
    assert samples(out_root, "pciehp_kernel_log_reader_up")[""] == 1
