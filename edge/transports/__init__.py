"""Device transports: the edge agent's only device I/O (serial now; camera and MQTT to come)."""
