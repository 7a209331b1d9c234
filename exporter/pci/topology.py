"""PCIe ports, their port-service devices, hotplug slots and MSI vectors, read from sysfs.

One `Topology` serves every collector of a scrape. Most of it changes only when the set of PCI
devices (or of hotplug slots) changes, so `TopologyCache` walks sysfs once and then, per scrape,
re-reads only the slot registers and slot attributes; a changed device set means a new walk.
"""

import os
import re
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

from exporter import sysfs
from exporter.paths import Paths
from exporter.pci import config_space
from exporter.pci.config_space import EXP_SLTCTL, ConfigSpaceError, PcieCap

BDF_RE = re.compile(r"^([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")
SERVICE_RE = re.compile(
    r"^(?P<bdf>[0-9a-f]{4,8}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]):pcie(?P<id>[0-9a-f]{2,3})$"
)
SLOT_ADDR_RE = re.compile(r"^([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})$")
SERVICE_HOTPLUG = 0x4
PCI_CLASS_BRIDGE_PCI = 0x0604


class Service(NamedTuple):
    """A port-service device on the pci_express bus (e.g. `0000:00:02.0:pcie004`)."""

    name: str
    service: int
    driver: Optional[str]

    @property
    def is_hotplug(self) -> bool:
        return self.service == SERVICE_HOTPLUG


class Slot(NamedTuple):
    """A registered hotplug slot under /sys/bus/pci/slots."""

    name: str
    address: str
    module: Optional[str]
    power: Optional[str]
    adapter: Optional[str]


class Port:
    """A PCIe root or downstream port and everything sysfs and config space say about it."""

    def __init__(
        self,
        dev_dir: str,
        address: str,
        segment: str,
        bus: str,
        device: str,
        function: str,
        port_type: str,
        driver: Optional[str],
        cap: Optional[PcieCap],
        config_error: Optional[str],
        secondary_bus: Optional[int],
        irq: Optional[int],
        msi_irqs: Tuple[int, ...],
        services: Tuple[Service, ...],
    ) -> None:
        self.dev_dir = dev_dir
        self.address = address
        self.segment = segment
        self.bus = bus
        self.device = device
        self.function = function
        self.port_type = port_type
        self.driver = driver
        self.cap = cap
        self.config_error = config_error
        self.secondary_bus = secondary_bus
        self.irq = irq
        self.msi_irqs = msi_irqs
        self.services = services
        # the hotplug port service (pcie004, pcie204), read by several collectors per scrape
        self.hotplug_service = next((s for s in services if s.is_hotplug), None)
        self.slots = []  # type: List[Slot]

    @property
    def labels(self) -> Tuple[str, str, str, str]:
        """node_exporter's pcidevice labels: segment, bus, device, function."""
        return (self.segment, self.bus, self.device, self.function)

    @property
    def slot_name(self) -> str:
        return self.slots[0].name if self.slots else ""

    @property
    def hotplug_capable(self) -> Optional[bool]:
        """Slot Implemented and HPC from config space; without it, any hotplug driver's presence."""
        if self.cap is not None:
            return self.cap.hotplug_capable
        if self.hotplug_service or any(s.module for s in self.slots):
            return True
        return None

    @property
    def irqs(self) -> Tuple[int, ...]:
        """The IRQs this port's services use: its MSI/MSI-X vectors, else its INTx `irq`.

        With MSI-X enabled `irq` still names the unused INTx line, so it only counts without MSI.
        """
        if self.msi_irqs:
            return self.msi_irqs
        return () if self.irq is None else (self.irq,)


class Topology:
    """The ports of one scrape, plus facts that are not per port."""

    def __init__(
        self, ports: Dict[str, Port], pciehp_poll_mode: bool, unreadable_config: List[str]
    ) -> None:
        self.ports = ports
        self.pciehp_poll_mode = pciehp_poll_mode
        self.unreadable_config = unreadable_config

    def port_for_slot_address(self, address: str) -> Optional[Port]:
        """The port whose secondary bus holds the slot at `dddd:bb:dd`."""
        m = SLOT_ADDR_RE.match(address)
        if not m:
            return None
        segment, bus = m.group(1), int(m.group(2), 16)
        for port in self.ports.values():
            if port.segment == segment and port.secondary_bus == bus:
                return port
        return None


def _service_id(raw: str) -> int:
    """The service bit of a service device id: `%02x` (3.x: type<<4) or `%03x` (type<<8) names."""
    value = int(raw, 16)
    return value & 0xF if len(raw) == 2 else value & 0xFF


def _read_int(path: str) -> Optional[int]:
    text = sysfs.read_text(path, limit=64)
    if text is None:
        return None
    try:
        return int(text, 0)
    except ValueError:
        return None


def _read_services(dev_dir: str, address: str) -> Tuple[Service, ...]:
    services = []
    for name in sysfs.list_dir(dev_dir):
        m = SERVICE_RE.match(name)
        if not m or m.group("bdf") != address:
            continue
        services.append(
            Service(name, _service_id(m.group("id")), sysfs.link_name(f"{dev_dir}/{name}/driver"))
        )
    return tuple(services)


def _msi_irqs(dev_dir: str) -> Tuple[int, ...]:
    irqs = []
    for name in sysfs.list_dir(f"{dev_dir}/msi_irqs"):
        if name.isdigit():
            irqs.append(int(name))
    return tuple(sorted(irqs))


def _port_type_without_config(bus: str, services: Tuple[Service, ...]) -> str:
    """Best guess without config space: service ids say root (0xx) or downstream (2xx)."""
    for s in services:
        raw = s.name.rsplit("pcie", 1)[1]
        value = int(raw, 16)
        port_type = (value >> 4) if len(raw) == 2 else (value >> 8)
        if port_type == 2:
            return "downstream_port"
        if port_type == 0:
            return "root_port"
    return "root_port" if bus == "00" else "downstream_port"


def read_port(dev_dir: str, address: str) -> Optional[Port]:
    """A Port if the device is a PCIe root or downstream port, else None."""
    m = BDF_RE.match(address)
    if not m:
        return None
    cls = _read_int(f"{dev_dir}/class")
    if cls is None or cls >> 8 != PCI_CLASS_BRIDGE_PCI:
        return None
    cfg = sysfs.read_bytes(f"{dev_dir}/config") or b""
    cap: Optional[PcieCap] = None
    error: Optional[str] = None
    try:
        cap = config_space.decode(cfg)
    except ConfigSpaceError as e:
        error = str(e)
    if cap is None and error is None:
        error = f"PCIe capability not readable in {len(cfg)} bytes of config space"
    services = _read_services(dev_dir, address)
    if cap is not None:
        if cap.port_type not in ("root_port", "downstream_port"):
            return None
        port_type = cap.port_type
    elif services or sysfs.link_name(f"{dev_dir}/driver") == "pcieport":
        port_type = _port_type_without_config(m.group(2), services)
    else:
        return None
    # the type-1 header (first 64 bytes) is readable by anyone; sysfs only as a fallback
    secondary = config_space.secondary_bus(cfg)
    if secondary is None:
        secondary = _read_int(f"{dev_dir}/secondary_bus_number")
    segment, bus, device, function = m.groups()
    msi = _msi_irqs(dev_dir)
    return Port(
        dev_dir=dev_dir,
        address=address,
        segment=segment,
        bus=bus,
        device=device,
        function=function,
        port_type=port_type,
        driver=sysfs.link_name(f"{dev_dir}/driver"),
        cap=cap,
        config_error=error if cap is None else None,
        secondary_bus=secondary,
        irq=None if msi else _read_int(f"{dev_dir}/irq"),  # the INTx line matters without MSI
        msi_irqs=msi,
        services=services,
    )


def read_slots(paths: Paths) -> List[Slot]:
    """Every slot under /sys/bus/pci/slots with its driver module and state attributes."""
    base = paths.sys("bus", "pci", "slots")
    slots = []
    for name in sysfs.list_dir(base):
        d = f"{base}/{name}"
        address = sysfs.read_text(f"{d}/address", limit=64)
        if not address:
            continue
        slots.append(
            Slot(
                name=name,
                address=address,
                module=sysfs.link_name(f"{d}/module"),
                power=sysfs.read_text(f"{d}/power", limit=16),
                adapter=sysfs.read_text(f"{d}/adapter", limit=16),
            )
        )
    return slots


def poll_mode(paths: Paths) -> bool:
    """pciehp's `pciehp_poll_mode` parameter (Y/1 means poll, no IRQ needed)."""
    value = sysfs.read_text(paths.sys("module", "pciehp", "parameters", "pciehp_poll_mode"), 16)
    return value in ("Y", "y", "1")


def read(paths: Paths) -> Topology:
    """Walk /sys/bus/pci/devices once and return every PCIe root and downstream port."""
    devices = paths.sys("bus", "pci", "devices")
    ports: Dict[str, Port] = {}
    unreadable: List[str] = []
    for address in sysfs.list_dir(devices):
        port = read_port(sysfs.resolve(os.path.join(devices, address)), address)
        if port is None:
            continue
        ports[address] = port
        if port.config_error:
            unreadable.append(f"{address}: {port.config_error}")
    topo = Topology(ports=ports, pciehp_poll_mode=poll_mode(paths), unreadable_config=unreadable)
    for slot in read_slots(paths):
        port = topo.port_for_slot_address(slot.address)
        if port is not None:
            port.slots.append(slot._replace(module=slot_driver(slot, port)))
    return topo


def slot_driver(slot: Slot, port: Port) -> Optional[str]:
    """The module that registered the slot: its `module` link, or where the kernel has none.

    Debian's 6.12 kernels create no `module` link on the slots built-in pciehp and acpiphp
    register (captured: tests/data/guests/trixie_q35_*). A slot with a `power` attribute was
    registered by a hotplug driver: pciehp when the port's hotplug service is bound to it, else
    acpiphp, the one other driver that registers hotplug slots behind x86 PCIe ports (shpchp
    serves SHPC bridges only). A slot without `power` (ACPI's pci_slot naming) has no driver.
    """
    if slot.module is not None or slot.power is None:
        return slot.module
    service = port.hotplug_service
    return "pciehp" if service is not None and service.driver == "pciehp" else "acpiphp"


REWALK_SECONDS = 300.0
"""Walk sysfs again at least this often: a driver unbound by hand changes no device set."""
MAX_OPEN = 256
"""Attribute files kept open between scrapes, at most (the rest are opened on each read)."""


class TopologyCache:
    """The topology of one root, walked again only when the PCI device or slot set changes.

    The key is the sorted listings of /sys/bus/pci/devices and /sys/bus/pci/slots plus the
    devices directory's mtime: a hot-add or removal changes the first, a hotplug driver binding
    (pciehp, acpiphp register slots) the second. Between walks a scrape re-reads, through
    descriptors kept open, only what changes under a present device: each port's Slot Control and
    Status (4 bytes at their offset, not the 4 KiB of config space: in a VM every config dword read
    traps to the hypervisor) and each slot's power and adapter attributes. Callers serialise `get`.
    """

    def __init__(self, paths: Paths, clock: Callable[[], float] = time.monotonic) -> None:
        self.paths = paths
        self._clock = clock
        self._key: Optional[Tuple[object, ...]] = None
        self._topo: Optional[Topology] = None
        self._walked = 0.0
        self._fds: Dict[str, int] = {}
        self._devices = str(paths.sys("bus", "pci", "devices"))
        self._slots = str(paths.sys("bus", "pci", "slots"))

    def get(self) -> Topology:
        """The current topology: cached facts plus freshly read registers, or a new walk."""
        key = self._fingerprint()
        now = self._clock()
        topo = self._topo
        if (
            topo is None
            or key != self._key
            or now - self._walked >= REWALK_SECONDS
            or not self._refresh(topo)
        ):
            self.close()
            topo = read(self.paths)
            self._topo, self._key, self._walked = topo, key, now
        return topo

    def close(self) -> None:
        """Close the descriptors kept open (the next `get` opens them again)."""
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __del__(self) -> None:
        self.close()

    def _fingerprint(self) -> Tuple[object, ...]:
        try:
            mtime: Optional[int] = os.stat(self._devices).st_mtime_ns
        except OSError:
            mtime = None
        return (mtime, tuple(sysfs.list_dir(self._devices)), tuple(sysfs.list_dir(self._slots)))

    def _refresh(self, topo: Topology) -> bool:
        """Re-read, in place, the slot registers and slot attributes. False when a port's config
        space is gone or short (the device went away: walk again)."""
        for port in topo.ports.values():
            cap = port.cap
            if cap is not None and cap.slot_implemented:
                data = self._pread(f"{port.dev_dir}/config", 4, cap.offset + EXP_SLTCTL)
                if data is None or len(data) != 4:
                    return False
                sltctl, sltsta = config_space.slot_registers(data)
                port.cap = cap._replace(sltctl=sltctl, sltsta=sltsta)
            if port.slots:
                port.slots = [self._slot_state(f"{self._slots}/{s.name}", s) for s in port.slots]
        return True

    def _slot_state(self, slot_dir: str, slot: Slot) -> Slot:
        power = self._pread(f"{slot_dir}/power", 16, 0)
        adapter = self._pread(f"{slot_dir}/adapter", 16, 0)
        return slot._replace(
            power=None if power is None else power.decode("utf-8", errors="replace").strip(),
            adapter=None if adapter is None else adapter.decode("utf-8", errors="replace").strip(),
        )

    def _pread(self, path: str, size: int, offset: int) -> Optional[bytes]:
        """`size` bytes at `offset` through a descriptor kept open (sysfs regenerates an attribute
        on every read at offset 0); None when unreadable, and the descriptor is dropped."""
        fd = self._fds.get(path)
        keep = fd is not None or len(self._fds) < MAX_OPEN
        data: Optional[bytes] = None
        try:
            if fd is None:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            data = os.pread(fd, size, offset)
        except OSError:
            keep = False
        if keep:
            self._fds[path] = fd
        elif fd is not None:
            os.close(fd)
            self._fds.pop(path, None)
        return data
