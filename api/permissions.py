"""Who may do what: an API key by its scopes, a session user by model permissions."""
from rest_framework import exceptions, permissions

from api import keys, models


def by_key(request):
    return isinstance(request.auth, models.ApiKey)


class HasPermission(permissions.BasePermission):
    """An API key holds a scope of view.required_scope (the name is checked by require()); a session
    user holds view.required_permission (staff are not exempt: grant it). A view whose methods need
    different ones names them in view.required_by_method {"POST": (permission, scope)}."""

    def has_permission(self, request, view):
        permission, scope = getattr(view, "required_by_method", {}).get(
            request.method, (view.required_permission, view.required_scope))
        if by_key(request):
            kinds = scope if isinstance(scope, tuple) else (scope,)
            return any(keys.allows(request.auth, kind) for kind in kinds)
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(permission))


def require(request, kind, name):
    """Refuse (403) an API key without a scope of kind on name; session users passed HasPermission."""
    if by_key(request) and not keys.allows(request.auth, kind, name):
        raise exceptions.PermissionDenied(f"API key {request.auth.prefix} has no scope {kind}:{name}")


def sees_topic(request, name):
    """Whether the caller may see topic name: a session user (with the view permission), or a key
    that may produce to it, consume from it, or operate."""
    if not by_key(request):
        return True
    return any(keys.allows(request.auth, kind, name) for kind in ("produce", "consume")) or \
        keys.allows(request.auth, keys.OPERATE)


def narrowed(request):
    """Whether what the caller sees is narrowed by scopes: an API key without operate."""
    return by_key(request) and not keys.allows(request.auth, keys.OPERATE)


def allows(request, kind, name):
    """Whether the caller may act on name with a scope of kind (session users: their permissions decided)."""
    return not by_key(request) or keys.allows(request.auth, kind, name)
