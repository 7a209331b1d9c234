"""pciehp-exporter: per-port PCIe hotplug readiness of a Linux guest, for Prometheus."""

__version__ = "0.1.0"
