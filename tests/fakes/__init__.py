"""Fakes for tests and benchmarks: working stand-ins, never mocks."""
