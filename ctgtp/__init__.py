"""The ``ctgtp`` command: one entry point, subcommand groups loaded lazily from the apps.

This package is the outermost shell: it may import every app (edge, server, firmware_sim),
which may not import each other.  Each group lives in its app's own ``cli`` module.
"""
