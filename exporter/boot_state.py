"""What the kernel log said about the current boot, kept in a file keyed by the boot id.

The boot's `_OSC` lines leave the ring buffer on a long-running guest, and textfile mode starts
afresh each run: the state file keeps them for as long as the boot lasts. A file written under
another boot id (the guest rebooted) is stale and ignored; a corrupt one is reported, never
trusted, and rewritten as soon as the log shows the boot facts again.
"""

import json
import os
import re
from typing import Any, Dict, FrozenSet, NamedTuple, Optional, Sequence, Tuple

from exporter.exposition import write_textfile
from exporter.logparse.osc import OscState
from exporter.paths import Paths

VERSION = 1
MAX_BYTES = 1 << 20
"""A larger state file is corrupt, not read."""
_BOOT_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class StateError(Exception):
    """The state file exists but cannot be trusted (unreadable, not JSON, wrong shape)."""


class BootFacts(NamedTuple):
    """Boot facts of the log: `_OSC` outcome per host bridge and the boot flags seen."""

    osc: Dict[str, OscState]
    flags: FrozenSet[str]


def read_boot_id(paths: Paths) -> str:
    """The kernel's random boot id (/proc/sys/kernel/random/boot_id); OSError or StateError."""
    path = paths.proc("sys", "kernel", "random", "boot_id")
    with open(path, "rb") as f:
        text = f.read(64).decode("ascii", errors="replace").strip()
    if not _BOOT_ID.match(text):
        raise StateError(f"{path}: not a boot id: {text[:40]!r}")
    return text


def osc_from_cmdline(params: Sequence[Tuple[str, str]]) -> Optional[OscState]:
    """The `_OSC` outcome the command line decides on its own (kernel-facts.md section 5), or None.

    `pcie_ports=compat` stops the request; `pcie_aspm=off` and `pci=nomsi` remove required support
    bits, so the kernel requests nothing whatever the platform offers.
    """
    if ("pcie_ports", "compat") in params:
        return OscState(outcome="not_requested", services_disabled=True)
    missing = []  # type: List[str]
    if ("pcie_aspm", "off") in params:
        missing += ["ASPM", "ClockPM"]
    if ("pci", "nomsi") in params:
        missing.append("MSI")
    if missing:
        return OscState(outcome="not_requested", missing_support=tuple(missing))
    return None


def _osc_to_json(state: OscState) -> Dict[str, Any]:
    return {
        "outcome": state.outcome,
        "controlled": sorted(state.controlled),
        "missing_support": list(state.missing_support),
        "denied": list(state.denied),
        "os_supports": list(state.os_supports),
        "requested": list(state.requested),
        "services_disabled": state.services_disabled,
        "reason": state.reason,
    }


def _strings(value: Any, what: str) -> Tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise StateError(f"{what} is not a list of strings")
    return tuple(value)


def _osc_from_json(doc: Any) -> OscState:
    if not isinstance(doc, dict):
        raise StateError("an _OSC entry is not an object")
    outcome, reason = doc.get("outcome"), doc.get("reason", "")
    disabled = doc.get("services_disabled", False)
    if not isinstance(outcome, str) or not isinstance(reason, str):
        raise StateError("an _OSC outcome or reason is not a string")
    if not isinstance(disabled, bool):
        raise StateError("services_disabled is not a boolean")
    return OscState(
        outcome=outcome,
        controlled=frozenset(_strings(doc.get("controlled", []), "controlled")),
        missing_support=_strings(doc.get("missing_support", []), "missing_support"),
        denied=_strings(doc.get("denied", []), "denied"),
        os_supports=_strings(doc.get("os_supports", []), "os_supports"),
        requested=_strings(doc.get("requested", []), "requested"),
        services_disabled=disabled,
        reason=reason,
    )


class BootStateFile:
    """The state file (`--collector.kernel_log.state-file`): load for this boot, save on change."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._saved = None  # type: Optional[Tuple[str, BootFacts]]

    def load(self, boot_id: str) -> Optional[BootFacts]:
        """The facts saved under `boot_id`; None if there is no file or it is another boot's."""
        try:
            with open(self.path, "rb") as f:
                raw = f.read(MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StateError(f"{self.path}: {e.strerror or e}") from e
        if len(raw) > MAX_BYTES:
            raise StateError(f"{self.path}: larger than {MAX_BYTES} bytes")
        try:
            doc = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # UnicodeDecodeError is a ValueError
            raise StateError(f"{self.path}: not JSON: {type(e).__name__}") from e
        if not isinstance(doc, dict) or doc.get("version") != VERSION:
            raise StateError(f"{self.path}: not a version {VERSION} state file")
        if doc.get("boot_id") != boot_id:
            return None  # written during an earlier boot: nothing in it holds now
        osc, flags = doc.get("osc"), doc.get("flags", [])
        if not isinstance(osc, dict):
            raise StateError(f"{self.path}: osc is not an object")
        try:
            facts = BootFacts(
                {str(k): _osc_from_json(v) for k, v in osc.items()},
                frozenset(_strings(flags, "flags")),
            )
        except StateError as e:
            raise StateError(f"{self.path}: {e}") from e
        self._saved = (boot_id, facts)
        return facts

    def save(self, boot_id: str, facts: BootFacts) -> None:
        """Write the facts atomically under `boot_id`, unless the file already holds them."""
        if self._saved == (boot_id, facts):
            return
        doc = {
            "version": VERSION,
            "boot_id": boot_id,
            "osc": {bridge: _osc_to_json(s) for bridge, s in sorted(facts.osc.items())},
            "flags": sorted(facts.flags),
        }
        data = json.dumps(doc, indent=1, sort_keys=True).encode("utf-8") + b"\n"
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StateError(f"{self.path}: directory {directory} does not exist")
        write_textfile(self.path, data)
        self._saved = (boot_id, facts)
