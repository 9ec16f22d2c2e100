"""Numbers read from a console page's query string or form, with the errors the page shows."""
from queueing import exceptions


def whole(text, default=None):
    """A whole number of 0 or more, or default for a missing or unreadable one (a page's position)."""
    try:
        return default if text in (None, "") else max(0, int(text))
    except ValueError:
        return default


def strict_whole(text, what):
    """A whole number of 0 or more, or InvalidArgument saying which (a search's bounds)."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        raise exceptions.InvalidArgument(reason=f"{what} must be a whole number, not {text!r}") from None
    if value < 0:
        raise exceptions.InvalidArgument(reason=f"{what} must be 0 or more")
    return value


def integer(text, what):
    """An integer, or InvalidArgument saying which (an action's input; the engine checks its range)."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise exceptions.InvalidArgument(reason=f"{what} must be a whole number") from None
