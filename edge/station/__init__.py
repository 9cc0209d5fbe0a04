"""The station agent: ``ctgtp edge run`` wires a unit's devices to the step engine, syncs in the
background and serves the operator kiosk (issue 21)."""
