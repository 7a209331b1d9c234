"""cmdline: the kernel parameters that decide whether PCIe port services (and pciehp) run."""

from typing import Iterator, List, Tuple

from exporter import sysfs
from exporter.collectors._metrics import gauge
from exporter.exposition import Metric
from exporter.paths import Paths
from exporter.registry import Scrape, Source

PARAMS = ("pcie_aspm", "pcie_ports", "pci", "acpi", "pcie_pme", "pcie_hp")
PREFIXES = ("pciehp.",)
MAX_BYTES = 64 * 1024


def split_cmdline(text: str) -> List[str]:
    """Split like the kernel's next_arg(): whitespace separates, double quotes group."""
    args: List[str] = []
    cur: List[str] = []
    quoted = False
    started = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            started = True
        elif ch.isspace() and not quoted:
            if started:
                args.append("".join(cur))
                cur, started = [], False
        else:
            cur.append(ch)
            started = True
    if started:
        args.append("".join(cur))
    return args


def relevant_params(text: str) -> List[Tuple[str, str]]:
    """(param, value) pairs that affect port services; `pci=a,b` gives one pair per option."""
    pairs: List[Tuple[str, str]] = []
    for arg in split_cmdline(text):
        if arg == "--":
            break  # the rest goes to init
        name, _, value = arg.partition("=")
        if name not in PARAMS and not name.startswith(PREFIXES):
            continue
        values = value.split(",") if name == "pci" and value else [value]
        for v in values:
            if (name, v) not in pairs:
                pairs.append((name, v))
    return pairs


def read_params(paths: Paths) -> List[Tuple[str, str]]:
    """The relevant (param, value) pairs of /proc/cmdline; OSError or ValueError if unreadable."""
    path = paths.proc("cmdline")
    raw = sysfs.read_file(path, MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        raise ValueError(f"{path} is larger than {MAX_BYTES} bytes")
    return relevant_params(raw.replace(b"\0", b" ").decode("utf-8", errors="replace"))


def scrape_params(scrape: Scrape) -> List[Tuple[str, str]]:
    """read_params of the scrape's procfs, read once per scrape."""
    return scrape.shared("cmdline", lambda: read_params(scrape.paths))


class CmdlineCollector(Source):
    """pciehp_kernel_param{param,value} from /proc/cmdline."""

    name = "cmdline"

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        metric = gauge(
            "kernel_param",
            "A kernel command-line parameter that affects PCIe port services (value = 1).",
            ["param", "value"],
        )
        for name, value in scrape_params(scrape):
            metric.add_metric([name, value], 1.0)
        yield metric
