"""A small gRPC service (echo.proto) and its server, for proxying tests through Tulle."""
