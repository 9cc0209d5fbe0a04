"""Units: enrolment, key rotation and revocation, the unit API (signed requests) and ingest."""
