"""Protocol buffer definitions of the control-plane API and their generated code."""
