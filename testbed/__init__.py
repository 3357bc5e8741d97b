"""The harness tests and bench share: real Redis, Kafka, Dapr sidecars, workers and
gateways, started on free ports and torn down. Dev-only: not in the wheel or the image."""
