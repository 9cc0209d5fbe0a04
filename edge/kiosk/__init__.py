"""The operator kiosk: a server-rendered web app served by the station agent (issue 21)."""
