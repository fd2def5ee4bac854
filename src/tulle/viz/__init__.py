"""Visibility: metrics API, tap relay, dashboard."""
