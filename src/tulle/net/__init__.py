"""The only socket and TLS code: listeners, connectors, original destination."""
