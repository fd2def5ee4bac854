"""Workload identity: CA, CSRs, certificate store and rotation."""
