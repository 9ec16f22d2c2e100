"""How a request proves who sends it: an API key (Authorization: Bearer sluice_…) or a session."""
from rest_framework import authentication, exceptions

from api import keys


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Authorization: Bearer <API key>. request.auth is then the ApiKey, whose scopes decide."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header:
            return None
        scheme = header[0].lower()
        if scheme == "token":
            raise exceptions.AuthenticationFailed(
                "DRF tokens were retired: use an API key (manage.py apikeys create) as Authorization: Bearer <key>")
        if scheme != "bearer":
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("give one API key after Bearer")
        try:
            key = keys.authenticate(header[1])
        except keys.Unusable as error:
            raise exceptions.AuthenticationFailed(str(error)) from None
        return key.user, key

    def authenticate_header(self, request):
        return 'Bearer realm="sluice"'
