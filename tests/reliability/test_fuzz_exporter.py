"""Property tests for the exporter's procfs/sysfs parsers on generated and mutated real input:
nothing escapes a scrape, one handler per port, and a malformed row changes nothing else."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.collectors.cmdline import relevant_params, split_cmdline
from exporter.interrupts import InterruptsError, parse
from exporter.pci.config_space import ConfigSpaceError, decode
from tests.exporter.conftest import parse_samples, scrape_text, select
from tests.support.captures import GUESTS, Capture

REAL_INTERRUPTS = (GUESTS / "q35_normal/tree/proc/interrupts").read_bytes()
REAL_CONFIG = (GUESTS / "q35_normal/tree/sys/devices/pci0000:00/0000:00:02.0/config").read_bytes()
REAL_CMDLINE = (GUESTS / "q35_aspm_off/tree/proc/cmdline").read_text()
FAST = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def mutate(data: bytes, edits: list[tuple[int, int]]) -> bytes:
    """Overwrite bytes of real input at generated positions with generated values."""
    out = bytearray(data)
    for pos, val in edits:
        if out:
            out[pos % len(out)] = val
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=30)


@FAST
@given(edits, st.integers(0, len(REAL_INTERRUPTS)))
def test_interrupts_parser_never_raises_unexpectedly(e, cut):
    data = mutate(REAL_INTERRUPTS, e)[:cut]
    try:
        rows = parse(data, wanted=range(0, 64))
    except InterruptsError:
        return  # the header was destroyed: the collector reports success 0
    for row in rows.values():
        assert row.total >= 0
        assert isinstance(row.actions, tuple)


@FAST
@given(st.binary(max_size=4096))
def test_interrupts_parser_on_random_bytes(data):
    try:
        parse(b"  CPU0 CPU1\n" + data, wanted=range(0, 64))
    except InterruptsError:
        raise AssertionError("a header was present") from None


@FAST
@given(st.integers(0, 200), st.binary(min_size=0, max_size=40))
def test_a_malformed_row_changes_no_other_row(index, junk):
    lines = REAL_INTERRUPTS.split(b"\n")
    i = 1 + index % (len(lines) - 2)
    head = lines[i].split(b":", 1)[0].strip()
    replaced = int(head) if head.isdigit() else None
    before = parse(REAL_INTERRUPTS, wanted=range(0, 64))
    lines[i] = junk.replace(b"\n", b" ")
    after = parse(b"\n".join(lines), wanted=range(0, 64))
    for irq, row in before.items():
        if irq != replaced:
            assert after.get(irq) == row, irq


@FAST
@given(edits, st.integers(0, 4096))
def test_config_space_decode_never_raises_unexpectedly(e, cut):
    cfg = mutate(REAL_CONFIG, e)[:cut]
    try:
        cap = decode(cfg)
    except ConfigSpaceError:
        return
    if cap is not None:
        assert cap.port_type in (None, "root_port", "upstream_port", "downstream_port")
        assert 0 <= cap.sltctl <= 0xFFFF and 0 <= cap.sltsta <= 0xFFFF


@FAST
@given(st.text(max_size=300))
def test_cmdline_parser_total(text):
    for name, value in relevant_params(REAL_CMDLINE + " " + text):
        assert name and "=" not in name
        assert isinstance(value, str)
    assert all('"' not in a for a in split_cmdline(text))  # quotes group, never stay


_tree_dir = Path(tempfile.mkdtemp(prefix="pciehp-fuzz-"))
_TREE = _tree_dir / "tree"
shutil.copytree(Capture("q35_normal", "after_unplug").tree, _TREE)
ATTRS = ["class", "config", "irq", "driver", "msi_irqs/24", "0000:00:02.0:pcie004/driver"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(ATTRS), st.binary(max_size=300))
def test_any_sysfs_attribute_garbage_keeps_the_scrape_whole(attr, junk):
    """One sysfs attribute of one port becomes arbitrary bytes: the scrape still succeeds for
    every other port, and each port still has exactly one handler."""
    target = _TREE / "sys/devices/pci0000:00/0000:00:02.0" / attr
    original = target.read_bytes()
    try:
        target.write_bytes(junk)
        s = parse_samples(scrape_text(_TREE))
    finally:
        target.write_bytes(original)
    ports = {
        (lb["bus"], lb["device"], lb["function"])
        for (n, lbls), _ in s.items()
        if n == "pciehp_port_info"
        for lb in [dict(lbls)]
    }
    assert len(ports) >= 11  # every other port is still there
    for bus, dev, fn in ports:
        handlers = select(s, "pciehp_port_hotplug_handler", bus=bus, device=dev, function=fn)
        assert sorted(handlers.values()) == [0, 0, 0, 1]
