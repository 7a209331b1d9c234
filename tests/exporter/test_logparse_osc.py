"""`_OSC` negotiation by era (kernel-facts.md section 2) and the boot flags of section 5."""

from __future__ import annotations

import pytest

from exporter.logparse import LogState, OscState, OscTracker

Q35 = "acpi PNP0A08:00: "


def osc_of(*lines: str) -> dict[str, OscState]:
    """The _OSC states after feeding the lines."""
    tracker = OscTracker()
    for line in lines:
        tracker.feed(line)
    return tracker.states()


def test_native_hotplug_q35_is_granted_despite_ltr_refusal() -> None:
    (state,) = osc_of(
        Q35 + "_OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI HPX-Type3]",
        Q35 + "_OSC: platform does not support [LTR]",
        Q35 + "_OSC: OS now controls [PCIeHotplug SHPCHotplug PME AER PCIeCapability]",
    ).values()
    assert state.outcome == "granted"
    assert state.controlled == {"PCIeHotplug", "SHPCHotplug", "PME", "AER", "PCIeCapability"}
    assert (state.missing_support, state.denied) == ((), ("LTR",))


def test_everything_granted() -> None:
    state = osc_of(
        Q35 + "_OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI EDR HPX-Type3]",
        Q35 + "_OSC: OS now controls [PCIeHotplug SHPCHotplug PME AER PCIeCapability LTR DPC]",
    )["PNP0A08:00"]
    assert state.outcome == "granted" and len(state.controlled) == 7 and state.denied == ()


def test_acpi_hotplug_refusal_is_partial() -> None:
    state = osc_of(
        Q35 + "_OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI EDR HPX-Type3]",
        Q35 + "_OSC: platform does not support [PCIeHotplug LTR DPC]",
        Q35 + "_OSC: OS now controls [SHPCHotplug PME AER PCIeCapability]",
    )["PNP0A08:00"]
    assert state.outcome == "partial"
    assert state.denied == ("PCIeHotplug", "LTR", "DPC")
    assert "PCIeHotplug" not in state.controlled


def test_kernel_without_shpc_is_still_granted() -> None:
    state = osc_of(Q35 + "_OSC: OS now controls [PCIeHotplug PME AER PCIeCapability]")
    assert state["PNP0A08:00"].outcome == "granted"


@pytest.mark.parametrize(
    "supports, missing",
    [
        ("ExtendedConfig Segments MSI EDR HPX-Type3", ("ASPM", "ClockPM")),  # pcie_aspm=off
        ("ExtendedConfig ASPM ClockPM Segments HPX-Type3", ("MSI",)),  # pci=nomsi
        ("ASPM ClockPM Segments MSI HPX-Type3", ("ExtendedConfig",)),  # i440fx, no MMCONFIG
    ],
    ids=["pcie_aspm=off", "pci=nomsi", "no-mmconfig"],
)
def test_not_requesting_names_the_missing_support(supports: str, missing: tuple) -> None:
    state = osc_of(
        Q35 + f"_OSC: OS supports [{supports}]",
        Q35 + "_OSC: not requesting OS control; OS requires [ExtendedConfig ASPM ClockPM MSI]",
    )["PNP0A08:00"]
    assert state.outcome == "not_requested"
    assert state.missing_support == missing
    assert state.controlled == frozenset() and state.denied == ()
    assert not state.services_disabled


def test_port_services_disabled_is_not_requested() -> None:
    i440fx = "acpi PNP0A03:00: "
    state = osc_of(
        i440fx + "_OSC: OS supports [ASPM ClockPM Segments HPX-Type3]",
        i440fx + "PCIe port services disabled; not requesting _OSC control",
    )["PNP0A03:00"]
    assert state.outcome == "not_requested" and state.services_disabled
    assert state.missing_support == ("ExtendedConfig", "MSI")


@pytest.mark.parametrize(
    "failure",
    ["_OSC failed (AE_SUPPORT); disabling ASPM", "_OSC failed (AE_SUPPORT)",
     "_OSC: platform retains control of PCIe features (AE_SUPPORT)"],
    ids=["3.14-4.x", "later", "5.x+"],
)  # fmt: skip
def test_refused_request_fails_and_names_what_was_refused(failure: str) -> None:
    state = osc_of(
        Q35 + "_OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI]",
        Q35 + "_OSC: OS requested [PCIeHotplug PME AER PCIeCapability]",
        Q35 + "_OSC: platform willing to grant [PME AER PCIeCapability]",
        Q35 + failure,
    )["PNP0A08:00"]
    assert state.outcome == "failed"
    assert state.denied == ("PCIeHotplug",)
    assert state.controlled == frozenset()
    assert state.reason == "AE_SUPPORT"


def test_platform_refusing_the_required_capability_fails() -> None:
    state = osc_of(
        Q35 + "_OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI]",
        Q35 + "_OSC: not requesting control; platform does not support [PCIeCapability]",
        Q35 + "_OSC: platform retains control of PCIe features (AE_SUPPORT)",
    )["PNP0A08:00"]
    assert (state.outcome, state.denied) == ("failed", ("PCIeCapability",))


def test_no_osc_method_fails() -> None:
    state = osc_of(
        Q35 + "_OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI]",
        Q35 + "_OSC: platform retains control of PCIe features (AE_NOT_FOUND)",
    )["PNP0A08:00"]
    assert (state.outcome, state.reason) == ("failed", "AE_NOT_FOUND")


def test_apple_assumes_control() -> None:
    state = osc_of(
        Q35 + "_OSC: OS assumes control of [PCIeHotplug SHPCHotplug AER PCIeCapability LTR DPC]"
    )["PNP0A08:00"]
    assert state.outcome == "granted" and "PCIeHotplug" in state.controlled


@pytest.mark.parametrize("prefix", ["acpi PNP0A08:00: ", "pci_root PNP0A08:00: "])
def test_hex_era_granted(prefix: str) -> None:
    state = osc_of(
        prefix + "Requesting ACPI _OSC control (0x1d)",
        prefix + "ACPI _OSC control (0x1d) granted",
    )["PNP0A08:00"]
    assert state.outcome == "granted"
    assert state.controlled == {"PCIeHotplug", "PME", "AER", "PCIeCapability"}
    assert state.requested == ("PCIeHotplug", "PME", "AER", "PCIeCapability")


def test_hex_era_request_failed() -> None:
    state = osc_of(
        Q35 + "Requesting ACPI _OSC control (0x1d)",
        Q35 + "ACPI _OSC request failed (AE_SUPPORT), returned control mask: 0x1c",
    )["PNP0A08:00"]
    assert (state.outcome, state.denied, state.reason) == ("failed", ("PCIeHotplug",), "AE_SUPPORT")


@pytest.mark.parametrize(
    "mask, missing, disabled",
    [("0x19", ("ASPM", "ClockPM"), False), ("0x0f", ("MSI",), False), ("0x1f", (), True)],
    ids=["pcie_aspm=off", "pci=nomsi", "pcie_ports=compat"],
)
def test_hex_era_unable_to_request(mask: str, missing: tuple, disabled: bool) -> None:
    state = osc_of(Q35 + f"Unable to request _OSC control (_OSC support mask: {mask})")
    assert state["PNP0A08:00"].outcome == "not_requested"
    assert state["PNP0A08:00"].missing_support == missing
    assert state["PNP0A08:00"].services_disabled is disabled


def test_bridges_are_independent_and_latest_negotiation_wins() -> None:
    got = osc_of(
        Q35 + "_OSC: OS supports [ExtendedConfig Segments MSI]",
        Q35 + "_OSC: not requesting OS control; OS requires [ExtendedConfig ASPM ClockPM MSI]",
        "acpi PNP0A08:01: _OSC: OS now controls [PCIeHotplug PME AER PCIeCapability]",
        Q35 + "_OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI]",
        Q35 + "_OSC: OS now controls [PCIeHotplug PME AER PCIeCapability]",
    )
    assert {b: s.outcome for b, s in got.items()} == {"PNP0A08:00": "granted",
                                                       "PNP0A08:01": "granted"}  # fmt: skip
    assert got["PNP0A08:00"].missing_support == ()


def test_cxl_lines_do_not_overwrite_pcie_state() -> None:
    cxl = "acpi ACPI0016:00: "
    state = osc_of(
        cxl + "_OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI EDR HPX-Type3]",
        cxl + "_OSC: OS supports [CXL11PortRegAccess CXL20PortDevRegAccess]",
        cxl + "_OSC: OS now controls [PCIeHotplug SHPCHotplug PME AER PCIeCapability LTR DPC]",
        cxl + "_OSC: OS now controls [CXLMemErrorReporting]",
    )["ACPI0016:00"]
    assert state.outcome == "granted" and "PCIeHotplug" in state.controlled


def test_supports_alone_is_unknown_and_unrelated_osc_lines_are_ignored() -> None:
    tracker = OscTracker()
    assert tracker.feed(Q35 + "_OSC: OS supports [ExtendedConfig ASPM ClockPM Segments MSI]")
    assert not tracker.feed("ACPI: _OSC evaluation for CPUs failed, trying _PDC")
    assert tracker.states()["PNP0A08:00"].outcome == "unknown"


@pytest.mark.parametrize(
    "line, flag",
    [
        ("PCIe ASPM is disabled", "aspm_disabled"),
        ("PCIe ASPM is forcibly enabled", "aspm_forced"),
        ("acpi PNP0A08:00: FADT indicates ASPM is unsupported, using BIOS configuration",
         "fadt_no_aspm"),
        ("ACPI FADT declares the system doesn't support PCIe ASPM, so disable it", "fadt_no_aspm"),
        ("acpi PNP0A08:00: PCIe port services disabled; not requesting _OSC control",
         "port_services_disabled"),
    ],
)  # fmt: skip
def test_boot_flags(line: str, flag: str) -> None:
    state = LogState()
    state.feed_lines(["[    0.000000] Command line: pcie_aspm=off", "[    0.1] " + line])
    assert state.flags() == {flag}
