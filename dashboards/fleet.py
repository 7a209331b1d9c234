"""The fleet dashboard: per VM image, how many guests cannot hot-unplug and why, the
correlator's open incidents, the host detach alerts, and pciehp event rates."""

from __future__ import annotations

from grafana_foundation_sdk.builders import alertgroups, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from dashboards.panels import (
    ALERTMANAGER,
    DETACH_MATCHER,
    GREEN,
    IMAGE,
    JOB,
    MERGE,
    ORANGE,
    PORT_LABELS,
    PROMETHEUS,
    RED,
    ROOT_CAUSE_MATCHER,
    alertmanager_variable,
    datasource_variable,
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

UID = "pciehp-fleet"
SEL = f"{JOB}, {IMAGE}"


def _stat(title: str, description: str, expr: str, bad_from: float | None = 1) -> stat.Panel:
    steps: list[tuple[float | None, str]] = [(None, GREEN)]
    if bad_from is not None:
        steps.append((bad_from, RED))
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(table_query(expr))
        .unit("none")
        .decimals(0)
        .thresholds(thresholds(*steps))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.NONE)
        .reduce_options(last_value())
        .height(4)
        .span(6)
    )


def _count_table(title: str, description: str, expr: str, columns: dict[str, str]) -> table.Panel:
    """A table of `count by (...)` rows: label columns renamed, the count as `Guests`/`Ports`."""
    return (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(PROMETHEUS)
        .with_target(table_query(expr))
        .unit("none")
        .with_transformation(organize(["Time"], columns, list(columns)))
        .height(8)
        .span(12)
    )


def build() -> db.Dashboard:
    """The fleet dashboard."""
    d = (
        project_dashboard("pciehp-watch / Fleet")
        .uid(UID)
        .description(
            "Per VM image: guests that cannot hot-unplug PCIe devices, why, and the "
            "correlator's incidents. Images are the image_id target label."
        )
        .link(sibling_link("Guest"))
        .with_variable(datasource_variable())
        .with_variable(alertmanager_variable())
        .with_variable(job_variable())
        .with_variable(
            label_variable(
                "image_id", "Image", 'label_values(pciehp_guest_info{job=~"$job"}, image_id)'
            )
        )
    )

    d = d.with_row(db.Row("Can the fleet hot-unplug?"))
    d = d.with_panel(
        _stat(
            "Guests unable to hot-unplug",
            "Guests with a hotplug-capable port that no driver serves, or an unplug stuck now.",
            f"sum(instance:pciehp_guest_cannot_unplug:bool{{{SEL}}})",
        )
    )
    d = d.with_panel(
        _stat(
            "Guests reporting",
            "Guests whose pciehp-exporter is scraped (pciehp_guest_info).",
            f"count(pciehp_guest_info{{{SEL}}})",
            bad_from=None,
        )
    )
    d = d.with_panel(
        _stat(
            "Images that cannot hot-unplug",
            "Images where at least half of the guests cannot hot-unplug "
            "(PCIeHotplugImageCannotUnplug).",
            f"count(image_id:pciehp_guests_cannot_unplug:ratio{{{IMAGE}}} >= 0.5) or vector(0)",
        )
    )
    d = d.with_panel(
        _stat(
            "Open root-cause incidents",
            "Incidents pciehp-correlator holds open (firing or resolving), all images.",
            'sum(max by (root_cause) (pciehp_correlator_incidents{state=~"firing|resolving"}))'
            " or vector(0)",
        )
    )

    d = d.with_row(db.Row("Per image"))
    d = d.with_panel(
        table.Panel()
        .title("Images")
        .description("Guests per image, how many cannot hot-unplug, and their share.")
        .datasource(PROMETHEUS)
        .with_target(table_query(f"image_id:pciehp_guests:count{{{IMAGE}}}", "A"))
        .with_target(table_query(f"image_id:pciehp_guests_cannot_unplug:sum{{{IMAGE}}}", "B"))
        .with_target(table_query(f"image_id:pciehp_guests_cannot_unplug:ratio{{{IMAGE}}}", "C"))
        .unit("none")
        .with_transformation(MERGE)
        .with_transformation(
            organize(
                ["Time"],
                {
                    "image_id": "Image",
                    "Value #A": "Guests",
                    "Value #B": "Cannot hot-unplug",
                    "Value #C": "Share",
                },
                ["image_id", "Value #A", "Value #B", "Value #C"],
            )
        )
        .override_by_name(
            "Share",
            [
                model.DynamicConfigValue(id_val="unit", value="percentunit"),
                model.DynamicConfigValue(
                    id_val="custom.cellOptions", value={"type": "color-background"}
                ),
                model.DynamicConfigValue(
                    id_val="thresholds",
                    value={
                        "mode": "absolute",
                        "steps": [
                            {"value": None, "color": GREEN},
                            {"value": 0.01, "color": ORANGE},
                            {"value": 0.5, "color": RED},
                        ],
                    },
                ),
            ],
        )
        .height(8)
        .span(12)
    )
    d = d.with_panel(
        timeseries.Panel()
        .title("Share of guests unable to hot-unplug")
        .description("image_id:pciehp_guests_cannot_unplug:ratio; the image alert fires at 50%.")
        .datasource(PROMETHEUS)
        .with_target(
            query(f"image_id:pciehp_guests_cannot_unplug:ratio{{{IMAGE}}}", "{{image_id}}")
        )
        .unit("percentunit")
        .min(0)
        .max(1)
        .height(8)
        .span(12)
    )

    d = d.with_row(db.Row("Why: what the guests report"))
    d = d.with_panel(
        _count_table(
            "Hotplug handler of capable ports",
            "Who answers an unplug on each hotplug-capable port: pciehp, pciehp_poll, acpiphp, "
            "or none (the unplug hangs).",
            f"count by (image_id, handler) (pciehp_port_hotplug_handler{{{SEL}}} == 1"
            f" and on ({PORT_LABELS}) pciehp_port_hotplug_capable{{{SEL}}} == 1)",
            {"image_id": "Image", "handler": "Handler", "Value": "Ports"},
        )
    )
    d = d.with_panel(
        _count_table(
            "_OSC outcome",
            "How each guest's host bridge negotiated PCIe control at boot (not_requested with "
            "missing ASPM ClockPM = pcie_aspm=off).",
            f"count by (image_id, outcome, missing_support, denied) (pciehp_osc_info{{{SEL}}})",
            {
                "image_id": "Image",
                "outcome": "Outcome",
                "missing_support": "Missing support",
                "denied": "Denied by firmware",
                "Value": "Guests",
            },
        )
    )
    d = d.with_panel(
        _count_table(
            "Kernel parameters",
            "Parameters that affect PCIe port services, per image (pcie_aspm, pcie_ports, pci, "
            "acpi, pcie_pme, pciehp.*).",
            f"count by (image_id, param, value) (pciehp_kernel_param{{{SEL}}})",
            {"image_id": "Image", "param": "Parameter", "value": "Value", "Value": "Guests"},
        )
    )
    d = d.with_panel(
        _count_table(
            "Machine and kernel",
            "Chipset and kernel release of the guests, per image.",
            f"count by (image_id, machine, kernel) (pciehp_guest_info{{{SEL}}})",
            {"image_id": "Image", "machine": "Machine", "kernel": "Kernel", "Value": "Guests"},
        )
    )

    d = d.with_row(db.Row("Incidents and detach alerts"))
    for title, description, matcher in (
        (
            "Root-cause incidents",
            "PCIeHotplugRootCause alerts in Alertmanager, one per image and cause.",
            ROOT_CAUSE_MATCHER,
        ),
        (
            "Host detach alerts",
            "Host-side detach timeouts in Alertmanager, grouped by image; those explained by "
            "an incident are inhibited.",
            DETACH_MATCHER,
        ),
    ):
        d = d.with_panel(
            alertgroups.Panel()
            .title(title)
            .description(description)
            .datasource(ALERTMANAGER)
            .alertmanager("${alertmanager}")
            .labels(matcher)
            .expand_all(True)
            .unit("none")
            .height(8)
            .span(12)
        )
    d = d.with_panel(
        timeseries.Panel()
        .title("Open incidents by root cause")
        .description("Incidents pciehp-correlator holds open, by diagnosed cause.")
        .datasource(PROMETHEUS)
        .with_target(
            query(
                'max by (root_cause) (pciehp_correlator_incidents{state=~"firing|resolving"}) > 0',
                "{{root_cause}}",
            )
        )
        .unit("none")
        .decimals(0)
        .height(8)
        .span(12)
    )
    d = d.with_panel(
        timeseries.Panel()
        .title("Detach alerts seen by the correlator")
        .description("Host detach alerts firing at the correlator's last reconcile.")
        .datasource(PROMETHEUS)
        .with_target(query("max(pciehp_correlator_firing_alerts)", "firing"))
        .unit("none")
        .decimals(0)
        .height(8)
        .span(12)
    )

    d = d.with_row(db.Row("pciehp activity"))
    d = d.with_panel(
        timeseries.Panel()
        .title("pciehp events per image")
        .description(
            "Hotplug events from the guests' kernel logs (attention_button, power_off_request, "
            "link_down, ...)."
        )
        .datasource(PROMETHEUS)
        .with_target(
            query(
                f"sum by (image_id, event) (rate(pciehp_events_total{{{SEL}}}[$__rate_interval]))",
                "{{image_id}} {{event}}",
            )
        )
        .unit("ops")
        .height(8)
        .span(12)
    )
    d = d.with_panel(
        timeseries.Panel()
        .title("Hotplug port interrupts per image")
        .description("Interrupts on the root ports' pciehp IRQs (all CPUs).")
        .datasource(PROMETHEUS)
        .with_target(
            query(
                "sum by (image_id) "
                f"(rate(pciehp_port_interrupts_total{{{SEL}}}[$__rate_interval]))",
                "{{image_id}}",
            )
        )
        .unit("ops")
        .height(8)
        .span(12)
    )
    return d
