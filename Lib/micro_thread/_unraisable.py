"""Report an exception through :func:`sys.unraisablehook` from pure Python.

CPython has no public Python-level way to call the unraisable hook with a
chosen ``object``: the default hook only accepts the internal
``UnraisableHookArgs`` type.  The interpreter does call the hook itself when
a ``__del__`` method raises, and it then passes the ``__del__`` callable as
``object``.  :func:`report_unraisable` uses that: it finalizes a throw-away
instance whose ``__del__`` is a callable with a descriptive ``repr`` and
raises the exception, so the hook receives the exception unchanged and
prints ``Exception ignored in: <description>``.
"""

__all__ = ["report_unraisable"]


class _Reporter:
    """Callable used as ``__del__``: raises the exception, reprs as a text."""

    __slots__ = ("_description", "_exc")

    def __init__(self, description, exc):
        self._description = description
        self._exc = exc

    def __repr__(self):
        return self._description

    def __call__(self):
        exc, self._exc = self._exc, None
        raise exc


def report_unraisable(description, exc):
    """Pass *exc* to :func:`sys.unraisablehook`.

    The hook's ``exc_value`` is *exc* itself; its ``object`` (or, on newer
    interpreters, its ``err_msg``) shows *description*.
    """
    holder = type("_UnraisableHolder", (),
                  {"__slots__": (), "__del__": _Reporter(description, exc)})
    holder()
