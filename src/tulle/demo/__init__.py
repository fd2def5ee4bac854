"""Demo services for trying the mesh and for tests and benchmarks."""
