"""Parse /proc/interrupts in every kernel generation's format, touching only the rows asked for.

Formats (kernel/irq/proc.c show_interrupts): 3.10 `PCI-MSI-edge  pciehp`; 4.x-6.1
`PCI-MSI 32768-edge  PCIe PME, pciehp` (hwirq encodes the BDF); >= 6.2
`PCI-MSIX-0000:00:05.0 0-edge  PCIe PME, pciehp` (BDF in the chip name); IO-APIC rows; named rows
(`NMI`, `LOC`, `ERR`, `MIS`); rows without a space after the colon; a count glued to the chip.
Only rows whose IRQ is wanted, or whose actions mention pciehp, are fully parsed, so a 96-vCPU
guest's 1,500 rows cost little more than reading the file.
"""

import re
from typing import Collection, Dict, NamedTuple, Optional, Tuple

MAX_BYTES = 32 * 1024 * 1024

_CHIP_BDF_RE = re.compile(r"PCI-MSIX?-([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")
_HW_FLOW_RE = re.compile(r"^(\d+)-(\w+)$")
_FLOW_SUFFIX_RE = re.compile(
    r"^(.+)-(edge|level|fasteoi|simple|percpu|percpu_devid|bad|none)$", re.I
)


class InterruptsError(ValueError):
    """The file is not /proc/interrupts (no CPU header)."""


class IrqRow(NamedTuple):
    """One numbered IRQ row: total count over CPUs, chip, hwirq, flow handler and actions."""

    irq: int
    total: int
    chip: str
    hwirq: Optional[int]
    flow: str
    actions: Tuple[str, ...]

    def bdf(self) -> Optional[str]:
        """The PCI function behind an MSI row, decoded from the chip name or the hwirq."""
        m = _CHIP_BDF_RE.search(self.chip)
        if m:
            return "{}:{}:{}.{}".format(*m.groups())
        if self.hwirq is not None and self.chip in ("PCI-MSI", "IR-PCI-MSI"):
            # pci_msi_domain_calc_hwirq: msi_index | pci_dev_id << 11 | domain_nr << 27
            dev_id = (self.hwirq >> 11) & 0xFFFF
            domain = self.hwirq >> 27
            return f"{domain:04x}:{dev_id >> 8:02x}:{(dev_id >> 3) & 0x1F:02x}.{dev_id & 7}"
        return None


def cpu_count(header: str) -> int:
    """Number of CPU columns in the header line."""
    n = sum(1 for tok in header.split() if tok.startswith("CPU"))
    if n == 0:
        raise InterruptsError("no CPU header: not /proc/interrupts")
    return n


def parse_row(irq: int, rest: str, ncpu: int) -> IrqRow:
    """Parse the part of a numbered row after `NN:`; raises ValueError if it is not a row."""
    tokens = rest.split()
    total = 0
    i = 0
    glued = ""
    while i < len(tokens) and i < ncpu:
        tok = tokens[i]
        if tok.isdigit():
            total += int(tok)
            i += 1
            continue
        m = re.match(r"^(\d+)(\D.*)$", tok)  # 2024 regression: count glued to the chip name
        if m:
            total += int(m.group(1))
            glued = m.group(2)
            i += 1
        break
    if i == 0:
        raise ValueError("row has no counts")
    tail = ([glued] if glued else []) + tokens[i:]
    chip = tail[0] if tail else ""
    hwirq: Optional[int] = None
    flow = ""
    consumed = 1
    hw_flow = _HW_FLOW_RE.match(tail[1]) if len(tail) > 1 else None
    if hw_flow:
        hwirq, flow, consumed = int(hw_flow.group(1)), hw_flow.group(2), 2
    elif len(tail) > 2 and tail[1].isdigit():  # ARM GIC: `GICv3  27 Level  name`
        hwirq, flow, consumed = int(tail[1]), tail[2], 3
    else:
        suffix = _FLOW_SUFFIX_RE.match(chip)  # 3.10: `PCI-MSI-edge`, `IO-APIC-fasteoi`
        if suffix:
            chip, flow = suffix.group(1), suffix.group(2)
    actions_text = " ".join(tail[consumed:])
    actions = tuple(a.strip() for a in actions_text.split(",") if a.strip())
    return IrqRow(irq=irq, total=total, chip=chip, hwirq=hwirq, flow=flow, actions=actions)


def _numbered(line: str, ncpu: int) -> Optional[IrqRow]:
    head, sep, rest = line.partition(":")
    name = head.strip()
    if not sep or not name.isdigit():
        return None
    try:
        return parse_row(int(name), rest, ncpu)
    except ValueError:
        return None


_PARSED: Dict[Tuple[bytes, int], Optional[IrqRow]] = {}
"""Row text (and CPU count) -> parsed row. A hotplug IRQ's counts rarely move, so a scrape mostly
finds the rows it wants already parsed."""
_PARSED_MAX = 1024
_UNPARSED = IrqRow(-1, 0, "", None, "", ())


def parse(data: bytes, wanted: Collection[int] = (), keyword: str = "pciehp") -> Dict[int, IrqRow]:
    """Rows of the IRQs in `wanted` and of every row mentioning `keyword`; malformed rows skipped.

    Rows are located with bytes.find (for `NN:` heads and for the keyword) and only those rows
    are decoded, so the rows not asked for cost a memory scan, not Python work or memory.
    Raises InterruptsError if there is no CPU header.
    """
    nl = data.find(b"\n")
    ncpu = cpu_count((data if nl == -1 else data[:nl]).decode("utf-8", errors="replace"))
    if nl == -1:
        return {}

    def row_at(pos: int) -> Optional[IrqRow]:
        start = data.rfind(b"\n", 0, pos) + 1
        end = data.find(b"\n", pos)
        line = data[start : len(data) if end == -1 else end]
        key = (line, ncpu)
        row = _PARSED.get(key, _UNPARSED)
        if row is _UNPARSED:
            if len(_PARSED) >= _PARSED_MAX:
                _PARSED.clear()
            row = _PARSED[key] = _numbered(line.decode("utf-8", errors="replace"), ncpu)
        return row

    rows: Dict[int, IrqRow] = {}
    if keyword:
        needle = keyword.encode()
        pos = data.find(needle, nl + 1)
        while pos != -1:
            row = row_at(pos)
            if row is not None and keyword in row.actions:
                rows[row.irq] = row
            end = data.find(b"\n", pos)
            pos = -1 if end == -1 else data.find(needle, end)
    for irq in set(wanted) - rows.keys():
        needle = f"{irq}:".encode()
        pos = data.find(needle, nl)
        while pos != -1:
            start = data.rfind(b"\n", 0, pos) + 1
            if not data[start:pos].strip():  # the IRQ number heads its row
                row = row_at(pos)
                if row is not None:
                    rows[irq] = row
                break
            pos = data.find(needle, pos + 1)
    return rows
