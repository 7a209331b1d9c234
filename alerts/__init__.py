"""Prometheus rules (generated from alerts/src/), Alertmanager routing and runbooks."""
