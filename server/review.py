"""Where :mod:`server.fhir` and :mod:`server.reports` find ``cqa_panel``; quality review itself
is the :mod:`server.quality` package (this name stays until those two import from
:mod:`server.quality.views`)."""

from server.quality.views import cqa_panel

__all__ = ["cqa_panel"]
