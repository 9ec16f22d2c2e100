"""Model permissions per action: each view names the permission it needs."""
from rest_framework import permissions


class HasPermission(permissions.BasePermission):
    """The user holds view.required_permission (staff are not exempt: grant it)."""

    def has_permission(self, request, view):
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm(view.required_permission))
