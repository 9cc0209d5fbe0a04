from tests.edge.conftest import clock, engine, started

__all__ = ["clock", "engine", "started"]
