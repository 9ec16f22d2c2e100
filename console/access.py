"""Who may see the console and who may act from it: staff with console.view_console, and for every
state change console.operate_console (superusers have both)."""
import functools

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.views.decorators.http import require_POST


def _guard(permission):
    def decorator(view):
        @functools.wraps(view)
        def guarded(request, *args, **kwargs):
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path(), "console:login")
            if not (request.user.is_staff and request.user.has_perm(permission)):
                raise PermissionDenied(f"the console needs a staff account with {permission}")
            return view(request, *args, **kwargs)
        return guarded
    return decorator


viewer = _guard("console.view_console")


def operator(view):
    """A POST-only view (CSRF-checked by the middleware) for users who may operate."""
    return require_POST(_guard("console.operate_console")(view))
