"""A transparency-log witness (``ctgtp witness run``): another site, another region's server or
a regulator runs it to check that the log never shows two histories, and cosigns what it saw.

* :mod:`witness.core`: the checks and the cosigning (no network);
* :mod:`witness.state`: the last cosigned checkpoint (written atomically) and the alerts;
* :mod:`witness.http`: reading ``<log>/checkpoint`` and tiles over HTTP;
* :mod:`witness.cli`: the ``witness`` click group.

It imports neither the server nor the edge agent: it trusts only the log's key and the log's
own signed statements.  Design: docs/transparency.md.
"""

from witness.core import Outcome, Witness
from witness.errors import (
    ConfigError,
    FetchError,
    StateError,
    UncheckableError,
    WitnessError,
)
from witness.state import Alert, StateDir

__all__ = [
    "Alert",
    "ConfigError",
    "FetchError",
    "Outcome",
    "StateDir",
    "StateError",
    "UncheckableError",
    "Witness",
    "WitnessError",
]
