"""Pure building blocks with no sockets: discovery model, algorithms (EWMA, P2C, backoff, budgets)."""
