"""Tulle: a service mesh in Python (sidecar proxy and control plane)."""

__version__ = "0.1.0"
