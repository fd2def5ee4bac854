"""The control plane: destination, identity and policy services over sources of truth."""
