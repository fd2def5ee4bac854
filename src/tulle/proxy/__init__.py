"""The sidecar proxy: layers and their wiring into inbound, outbound and admin."""
