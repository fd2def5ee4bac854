"""The Policy service: the manifest's `policy:` section served per workload port (WatchInbound)."""
