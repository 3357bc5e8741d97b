"""Test harness: a real Redis and a real Dapr sidecar, started per test and torn down."""
