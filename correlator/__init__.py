"""pciehp-correlator: host-side detach-timeout alerts + guest facts -> one incident per image."""

__version__ = "0.1.0"
