"""identity: the guest's instance UUID, chipset and kernel release, to join with host alerts."""

import os
import re
from typing import Iterator, List, Optional, Tuple

from exporter import sysfs
from exporter.collectors._metrics import gauge
from exporter.exposition import Metric
from exporter.paths import Paths
from exporter.registry import Scrape, Source

# host bridge vendor:device at 0000:00:00.0
CHIPSETS = {("0x8086", "0x29c0"): "q35", ("0x8086", "0x1237"): "i440fx"}
UUID_RE = re.compile(
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
VERSION_RE = re.compile(r"^Linux version (\S+)")


class IdentityCollector(Source):
    """pciehp_guest_info{instance_uuid, machine, kernel}."""

    name = "identity"

    def __init__(self, product_uuid: Optional[str] = None) -> None:
        """product_uuid replaces the SMBIOS value: a fleet simulation serves one capture as
        many guests, each with its own instance UUID."""
        self.product_uuid = product_uuid
        self._read: Optional[Tuple[List[str], str, List[str]]] = None

    def collect(self, scrape: Scrape) -> Iterator[Metric]:
        """Read on the first scrape only: UUID, chipset and kernel release are fixed for a boot,
        as is the privilege to read them (an error is reported again on every scrape)."""
        if self._read is None:
            self._read = self._identify(scrape.paths)
        values, uuid_unknown, errors = self._read
        for message in errors:
            scrape.error(message)
        if uuid_unknown:
            scrape.fact_unknown("instance_uuid", uuid_unknown)
        info = gauge(
            "guest_info",
            "The guest: SMBIOS product UUID (the instance UUID), chipset, kernel release.",
            ["instance_uuid", "machine", "kernel"],
        )
        info.add_metric(values, 1.0)
        yield info

    def _identify(self, paths: Paths) -> Tuple[List[str], str, List[str]]:
        """([uuid, machine, kernel release], why the UUID is unknown or "", errors)."""
        errors: List[str] = []
        uuid, uuid_unknown = self.product_uuid or "", ""
        if not uuid:
            uuid, uuid_unknown, message = _product_uuid(paths)
            if message:
                errors.append(message)
        host_bridge = sysfs.resolve(paths.sys("bus", "pci", "devices", "0000:00:00.0"))
        ids = (
            sysfs.read_text(os.path.join(host_bridge, "vendor"), limit=16),
            sysfs.read_text(os.path.join(host_bridge, "device"), limit=16),
        )
        machine = CHIPSETS.get(ids, "other")
        release = sysfs.read_text(paths.proc("sys", "kernel", "osrelease"), limit=256)
        if not release:
            m = VERSION_RE.match(sysfs.read_text(paths.proc("version"), limit=4096) or "")
            release = m.group(1) if m else ""
        if not release:
            errors.append(
                "kernel release unknown: neither sys/kernel/osrelease nor version readable"
            )
        return [uuid.lower(), machine, release], uuid_unknown, errors


def _product_uuid(paths: Paths) -> Tuple[str, str, str]:
    """(UUID, fact_unknown reason, error message): the reason and message tell a platform
    without DMI from an unprivileged reader from a value that is not a UUID."""
    path = os.path.join(sysfs.resolve(paths.sys("class", "dmi", "id")), "product_uuid")
    try:
        text = sysfs.read_file(path, 128).decode("ascii", errors="replace").strip()
    except PermissionError:
        return "", "permission_denied", f"{path}: permission denied (mode 0400 root)"
    except FileNotFoundError:
        return "", "dmi_missing", f"{path} does not exist: no SMBIOS on this platform"
    except OSError as e:
        return "", "dmi_unreadable", f"{path}: {e.strerror}"
    if not UUID_RE.match(text):
        return "", "not_a_uuid", f"{path} holds {text[:40]!r}, not a UUID"
    return text, "", ""
