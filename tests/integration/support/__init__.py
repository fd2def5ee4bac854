"""Helpers for the integration tests: free ports, managed processes, a raw
HTTP/1 client for exact-byte cases, and launchers for the backend and proxy."""
