"""Kubernetes: install manifests, injection, admission webhook."""
