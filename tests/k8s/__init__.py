"""Checks of what ships: the container image's entry point and the Kubernetes manifests."""
