"""Helpers for the tests and benchmarks (the service as a child process); not part of the
Docker image."""
