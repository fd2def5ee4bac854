"""The local mesh on one machine (`tulle up`)."""
