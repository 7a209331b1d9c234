"""The correlator tests' fixtures (a fleet of real guest exporters scraped by a real Prometheus,
and per-test stacks of a real Alertmanager plus a real correlator), reused here."""

from tests.correlator.conftest import fleet, make_stack

__all__ = ["fleet", "make_stack"]
