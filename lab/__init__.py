"""The lab: real guests under QEMU for tests, captures and pciehp-check-image."""
