"""People and sign-in: accounts, roles, sessions, passwords, and the access checks of the API."""
