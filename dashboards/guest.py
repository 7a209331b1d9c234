"""The guest dashboard: one instance's PCIe ports and slots, who serves them, the pciehp event
timeline, the `_OSC` outcome and the kernel parameters that decided it, and the same VM's ports
as its compute host reads them (pciehp-host-exporter)."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models.dashboard import VariableHide

from dashboards.panels import (
    GREEN,
    IMAGE,
    INSTANCE,
    JOB,
    MERGE,
    ORANGE,
    PORT_LABELS,
    PROMETHEUS,
    RED,
    datasource_variable,
    flag_mappings,
    job_variable,
    label_variable,
    last_value,
    organize,
    project_dashboard,
    query,
    sibling_link,
    table_query,
    thresholds,
)

UID = "pciehp-guest"
SEL = f"{JOB}, {INSTANCE}"
# The host exporter's series belong to the compute host's target; the VM is its instance_uuid.
VM = 'instance_uuid=~"$instance_uuid"'
HOST_PORT_LABELS = "instance_uuid, segment, bus, device, function, port_id"
PORT_COLUMNS = ["segment", "bus", "device", "function"]
HIDDEN = ["Time", "__name__", "job", "instance", "image_id"]


def _stat(title: str, description: str, expr: str, bad: str = RED) -> stat.Panel:
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(table_query(expr))
        .unit("none")
        .decimals(0)
        .thresholds(thresholds((None, GREEN), (1, bad)))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(last_value())
        .height(4)
        .span(6)
    )


def _table(title: str, description: str, height: int = 8, span: int = 12) -> table.Panel:
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .unit("none")
        .height(height)
        .span(span)
    )


def build() -> db.Dashboard:
    """The guest dashboard."""
    d = (
        project_dashboard("pciehp-watch / Guest")
        .uid(UID)
        .description(
            "One guest: can each PCIe port answer a hot-unplug, who serves it, and the boot "
            "configuration that decided it."
        )
        .link(sibling_link("Fleet"))
        .with_variable(datasource_variable())
        .with_variable(job_variable())
        .with_variable(
            label_variable(
                "image_id", "Image", 'label_values(pciehp_guest_info{job=~"$job"}, image_id)'
            )
        )
        .with_variable(
            label_variable(
                "instance",
                "Instance",
                f"label_values(pciehp_guest_info{{{JOB}, {IMAGE}}}, instance)",
                multi=False,
                include_all=False,
            )
        )
        .with_variable(
            label_variable(
                "instance_uuid",
                "Instance UUID",
                f"label_values(pciehp_guest_info{{{SEL}}}, instance_uuid)",
                multi=False,
                include_all=False,
            ).hide(VariableHide.HIDE_VARIABLE)
        )
    )

    d = d.with_row(db.Row("Verdict"))
    d = d.with_panel(
        stat.Panel()
        .title("Can hot-unplug")
        .description(
            "No: a hotplug-capable port has no driver, or an unplug is stuck. ACPI hotplug "
            "and pciehp poll mode count as served."
        )
        .datasource(PROMETHEUS)
        .with_target(table_query(f"instance:pciehp_guest_cannot_unplug:bool{{{SEL}}}"))
        .unit("none")
        .mappings(flag_mappings("yes", "no", bad=1))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(last_value())
        .height(4)
        .span(6)
    )
    d = d.with_panel(
        _stat(
            "Ports nobody serves",
            "Hotplug-capable ports with handler none: a device_del behind them hangs.",
            f"count(pciehp_port_hotplug_capable{{{SEL}}} == 1 and on ({PORT_LABELS})"
            f' pciehp_port_hotplug_handler{{{SEL}, handler="none"}} == 1) or vector(0)',
        )
    )
    d = d.with_panel(
        _stat(
            "Stuck unplugs",
            "Attention button pressed by the host, slot interrupt never armed (not poll mode "
            "or ACPI hotplug).",
            f"count((pciehp_slot_button_pending{{{SEL}}} == 1 and on ({PORT_LABELS}, slot)"
            f" pciehp_slot_interrupt_enabled{{{SEL}}} == 0) unless on ({PORT_LABELS})"
            f' pciehp_port_hotplug_handler{{{SEL}, handler=~"acpiphp|pciehp_poll"}} == 1)'
            " or vector(0)",
        )
    )
    d = d.with_panel(
        _stat(
            "Rescan workarounds",
            "Cron entries or systemd units writing /sys/bus/pci/rescan: they hide hot-add "
            "failures and do nothing for unplug.",
            f"count(pciehp_rescan_workaround{{{SEL}}}) or vector(0)",
            bad=ORANGE,
        )
    )
    d = d.with_panel(
        _table("Guest", "Identity: SMBIOS UUID (the instance UUID), chipset, kernel.", 5)
        .with_target(table_query(f"pciehp_guest_info{{{SEL}}}"))
        .with_transformation(
            organize(
                [*HIDDEN, "Value"],
                {"instance_uuid": "Instance UUID", "machine": "Machine", "kernel": "Kernel"},
                ["instance_uuid", "machine", "kernel"],
            )
        )
    )
    d = d.with_panel(
        _table(
            "Exporter collectors", "Each exporter source; failed means its facts are missing.", 5
        )
        .with_target(table_query(f"pciehp_collector_success{{{SEL}}}"))
        .mappings(flag_mappings("failed", "ok", bad=0))
        .with_transformation(
            organize(HIDDEN, {"collector": "Collector", "Value": "State"}, ["collector", "Value"])
        )
    )

    d = d.with_row(db.Row("Ports and slots"))
    d = d.with_panel(
        _table(
            "Ports",
            "Each PCIe root or downstream port: who answers an unplug (handler), Slot "
            "Capabilities HPC, the pciehp service bound, its IRQ registered.",
            10,
            24,
        )
        .with_target(table_query(f"pciehp_port_info{{{SEL}}}", "A"))
        .with_target(table_query(f"pciehp_port_hotplug_handler{{{SEL}}} == 1", "B"))
        .with_target(table_query(f"pciehp_port_hotplug_capable{{{SEL}}}", "C"))
        .with_target(table_query(f"pciehp_port_service_bound{{{SEL}}}", "D"))
        .with_target(table_query(f"pciehp_port_irq_registered{{{SEL}}}", "E"))
        .mappings(flag_mappings("no", "yes"))
        .with_transformation(MERGE)
        .with_transformation(
            organize(
                [*HIDDEN, *PORT_COLUMNS, "Value #A", "Value #B"],
                {
                    "address": "Port",
                    "port_type": "Type",
                    "slot": "Slot",
                    "handler": "Handler",
                    "Value #C": "Hotplug capable",
                    "Value #D": "pciehp bound",
                    "Value #E": "IRQ registered",
                },
                ["address", "port_type", "slot", "handler", "Value #C", "Value #D", "Value #E"],
            )
        )
    )
    d = d.with_panel(
        _table(
            "Slots",
            "Slot registers and sysfs state. Button pending with interrupt disabled is a "
            "stuck unplug.",
            10,
            24,
        )
        .with_target(table_query(f"pciehp_slot_power_on{{{SEL}}}", "A"))
        .with_target(table_query(f"pciehp_slot_adapter_present{{{SEL}}}", "B"))
        .with_target(table_query(f"pciehp_slot_button_pending{{{SEL}}}", "C"))
        .with_target(table_query(f"pciehp_slot_interrupt_enabled{{{SEL}}}", "D"))
        .mappings(flag_mappings("no", "yes"))
        .with_transformation(MERGE)
        .with_transformation(
            organize(
                HIDDEN,
                {
                    "slot": "Slot",
                    "Value #A": "Power on",
                    "Value #B": "Adapter present",
                    "Value #C": "Button pending",
                    "Value #D": "Interrupt enabled",
                },
                [*PORT_COLUMNS, "slot", "Value #A", "Value #B", "Value #C", "Value #D"],
            )
        )
    )
    d = d.with_panel(
        statetimeline.Panel()
        .title("Attention button per port")
        .description(
            "pressed: the host's device_del latched the button; it clears within seconds when "
            "a driver answers."
        )
        .datasource(PROMETHEUS)
        .with_target(
            query(
                f"max by (segment, bus, device, function) (pciehp_slot_button_pending{{{SEL}}})",
                "{{bus}}:{{device}}.{{function}}",
            )
        )
        .unit("none")
        .mappings(flag_mappings("idle", "pressed", bad=1))
        .show_value(common.VisibilityMode.NEVER)
        .height(10)
        .span(24)
    )

    d = d.with_row(db.Row("Events"))
    d = d.with_panel(
        timeseries.Panel()
        .title("pciehp event timeline")
        .description("pciehp kernel-log events per interval, all ports.")
        .datasource(PROMETHEUS)
        .with_target(
            query(
                f"sum by (event) (increase(pciehp_events_total{{{SEL}}}[$__rate_interval]))",
                "{{event}}",
            )
        )
        .unit("short")
        .draw_style(common.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .height(8)
        .span(12)
    )
    d = d.with_panel(
        timeseries.Panel()
        .title("Interrupts per port")
        .description(
            "Interrupts on each port's pciehp IRQ; flat zero with handler pciehp is normal."
        )
        .datasource(PROMETHEUS)
        .with_target(
            query(
                "sum by (segment, bus, device, function) "
                f"(rate(pciehp_port_interrupts_total{{{SEL}}}[$__rate_interval]))",
                "{{bus}}:{{device}}.{{function}}",
            )
        )
        .unit("ops")
        .height(8)
        .span(12)
    )

    d = _host_view(d)

    d = d.with_row(db.Row("Boot configuration"))
    d = d.with_panel(
        _table(
            "_OSC negotiation",
            "Per host bridge: not_requested with missing ASPM ClockPM means pcie_aspm=off.",
            6,
        )
        .with_target(table_query(f"pciehp_osc_info{{{SEL}}}"))
        .with_transformation(
            organize(
                [*HIDDEN, "Value"],
                {
                    "bridge": "Bridge",
                    "outcome": "Outcome",
                    "missing_support": "Missing support",
                    "denied": "Denied by firmware",
                },
                ["bridge", "outcome", "missing_support", "denied"],
            )
        )
    )
    d = d.with_panel(
        _table("_OSC control", "Features the OS controls after _OSC, per host bridge.", 6)
        .with_target(table_query(f"pciehp_osc_control{{{SEL}}}"))
        .mappings(flag_mappings("firmware", "OS"))
        .with_transformation(
            organize(
                HIDDEN,
                {"bridge": "Bridge", "feature": "Feature", "Value": "Controlled by"},
                ["bridge", "feature", "Value"],
            )
        )
    )
    d = d.with_panel(
        _table(
            "Kernel parameters",
            "Parameters that affect PCIe port services (pcie_aspm, pcie_ports, pci, acpi, "
            "pcie_pme, pciehp.*).",
            6,
            24,
        )
        .with_target(table_query(f"pciehp_kernel_param{{{SEL}}}"))
        .with_transformation(
            organize(
                [*HIDDEN, "Value"], {"param": "Parameter", "value": "Value"}, ["param", "value"]
            )
        )
    )
    return d


def _host_view(d: db.Dashboard) -> db.Dashboard:
    """The row showing the VM's ports as its compute host reads them from QEMU's monitor."""
    d = d.with_row(db.Row("Host view (pciehp-host-exporter)"))
    d = d.with_panel(
        _table(
            "Host verdict",
            "What the compute host offers this VM (native or ACPI hotplug) and whether a "
            "device_del will be answered, read from QEMU without the guest's help.",
            5,
            18,
        )
        .with_target(table_query(f"pciehp_host_vm_info{{{VM}}}", "A"))
        .with_target(table_query(f"pciehp_host_vm_verdict{{{VM}}} == 1", "B"))
        .with_transformation(MERGE)
        .with_transformation(
            organize(
                [*HIDDEN, "instance_uuid", "Value #A", "Value #B"],
                {
                    "domain": "Domain",
                    "machine": "Machine",
                    "hotplug": "Hotplug offered",
                    "verdict": "Verdict",
                    "reason": "Reason",
                },
                ["domain", "machine", "hotplug", "verdict", "reason"],
            )
        )
    )
    d = d.with_panel(
        _stat(
            "Host: stuck unplugs",
            "Ports whose attention button the host sees latched on a slot the guest never "
            "armed (not ACPI hotplug).",
            f"count(pciehp_host_slot_button_pending{{{VM}}} == 1 and on ({HOST_PORT_LABELS})"
            f" pciehp_host_port_driver_armed{{{VM}}} == 0 unless on (instance_uuid)"
            f' pciehp_host_vm_info{{{VM}, hotplug="acpi"}}) or vector(0)',
        ).span(6)
    )
    d = d.with_panel(
        _table(
            "Host view of ports",
            "Each PCIe root or downstream port's slot registers as QEMU holds them: armed "
            "means the guest's driver wrote Slot Control to listen.",
            10,
            24,
        )
        .with_target(table_query(f"pciehp_host_port_hotplug_capable{{{VM}}}", "A"))
        .with_target(table_query(f"pciehp_host_port_driver_armed{{{VM}}}", "B"))
        .with_target(table_query(f"pciehp_host_port_interrupt_enabled{{{VM}}}", "C"))
        .with_target(table_query(f"pciehp_host_slot_button_pending{{{VM}}}", "D"))
        .with_target(table_query(f"pciehp_host_port_unplug_ready{{{VM}}}", "E"))
        .mappings(flag_mappings("no", "yes"))
        .with_transformation(MERGE)
        .with_transformation(
            organize(
                [*HIDDEN, "instance_uuid", "segment"],
                {
                    "port_id": "Port id",
                    "Value #A": "Hotplug capable",
                    "Value #B": "Armed by guest",
                    "Value #C": "Interrupt enabled",
                    "Value #D": "Button pending",
                    "Value #E": "Unplug ready",
                },
                ["port_id", "bus", "device", "function", *(f"Value #{r}" for r in "ABCDE")],
            )
        )
    )
    return d
