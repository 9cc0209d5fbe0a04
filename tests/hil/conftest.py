from firmware_sim.pytest_plugin import (
    ctgtp_server,
    ctgtp_server_database_url,
    mosquitto_broker,
    sim_bioreactor,
    sim_cell_counter,
    sim_scanner,
    sim_unit,
)
from tests.edge.conftest import clock, engine, started

# The plugin's fixtures (firmware_sim/pytest_plugin.py), as a test engineer gets them; named
# here until the pytest11 entry point loads the plugin in every run (then these are the same).
__all__ = [
    "clock",
    "ctgtp_server",
    "ctgtp_server_database_url",
    "engine",
    "mosquitto_broker",
    "sim_bioreactor",
    "sim_cell_counter",
    "sim_scanner",
    "sim_unit",
    "started",
]
