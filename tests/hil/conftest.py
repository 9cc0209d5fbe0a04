from tests.edge.conftest import clock, engine, started

# The HIL fixtures (mosquitto_broker, sim_scanner, sim_unit, ctgtp_server, ...) come from the
# ctgtp pytest plugin (firmware_sim/pytest_plugin.py), loaded by its pytest11 entry point in
# every run, as a test engineer gets them.
__all__ = ["clock", "engine", "started"]
