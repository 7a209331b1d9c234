"""Grafana dashboards for pciehp-watch, generated with grafana-foundation-sdk.

`python -m dashboards.generate` writes fleet.json and guest.json beside this file.
"""
