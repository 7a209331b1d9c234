"""Clients of the two upstreams: Alertmanager (alerts in and out), Prometheus (guest facts)."""
