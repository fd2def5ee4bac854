"""Pure building blocks with no sockets: discovery model, EWMA, P2C, backoff, budgets."""
