"""Helpers shared by the test suite: real servers on loopback, paths to the bundled captures."""
