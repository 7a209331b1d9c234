"""pciehp-host-exporter: each QEMU VM's PCIe slot registers, read through its monitor."""
