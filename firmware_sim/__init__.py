"""firmware_sim: simulated devices that speak the real protocols, with fault injection.

The bytes are produced here, independently of ``hardware``'s codecs (a shared bug would pass its
own tests); both sides are checked against golden byte fixtures in ``tests/fixtures/``.

Importing this package (``import firmware_sim``: the one line a process needs) makes pyserial
open ``sim://`` URLs, the way its own ``loop://`` and ``spy://`` handlers work: the package
:mod:`firmware_sim.urlhandler` is added to ``serial.protocol_handler_packages``, where
``serial_for_url`` looks for a ``protocol_<scheme>`` module.  The pytest plugin
(:mod:`firmware_sim.pytest_plugin`) imports it, so every pytest run that loads the plugin can
open them too.
"""

from __future__ import annotations

import serial

HANDLERS = "firmware_sim.urlhandler"


def register_url_handlers() -> None:
    """Make ``serial_for_url("sim://...")`` work (idempotent; done when the package is imported).

    Appended, never inserted first: pyserial's own schemes keep their meaning."""
    if HANDLERS not in serial.protocol_handler_packages:
        serial.protocol_handler_packages.append(HANDLERS)


register_url_handlers()
