"""Generated gRPC code of the demo shop (shop.proto); regenerate with generate.sh."""
