"""The `tulle` command line: one module per command group."""
