"""Control-plane API: .proto files, generated code and thin client/server helpers."""
