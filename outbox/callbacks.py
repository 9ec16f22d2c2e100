"""HTTP check-back callbacks of half messages, guarded against server-side request forgery.

A callback URL's host must be in settings.SLUICE_HALF_CALLBACK_ALLOW: a host name ("checks.example"),
a domain and its subdomains (".example"), or an IP network ("10.1.0.0/16", "127.0.0.1"). The list is
empty by default, so no callback is accepted until an operator names where they may go. Each
address the host resolves to is checked when the callback is made: one that is not globally
routable (private, loopback, link-local such as the cloud metadata address, reserved, multicast)
is refused unless it lies in an allowed network. The request goes to the address that was checked
(no second lookup that DNS rebinding could change), with http.client directly: no redirect is
followed and no proxy variable is read.
"""
import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit

from django.conf import settings

from queueing import exceptions

MAX_ANSWER_BYTES = 65536


class Refused(Exception):
    """The callback may not be made; the message says why, in one line."""


def _allow_list():
    names, networks = [], []
    for entry in settings.SLUICE_HALF_CALLBACK_ALLOW:
        entry = entry.strip().lower()
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            names.append(entry)
    return names, networks


def _parts(url):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise exceptions.InvalidArgument(reason=f"callback_url must be an http(s) URL, not {url!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise exceptions.InvalidArgument(reason=f"callback_url has an invalid port: {url!r}") from None
    return parts, parts.hostname.lower().rstrip("."), port


def _literal(host):
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def validate(url):
    """Refuse (InvalidArgument) a callback URL whose host the allow-list does not name."""
    _, host, _ = _parts(url)
    names, networks = _allow_list()
    address = _literal(host)
    if address is not None:
        allowed = any(address in network for network in networks)
    else:
        allowed = any(host == name or (name.startswith(".") and host.endswith(name)) for name in names)
    if not allowed:
        raise exceptions.InvalidArgument(
            reason=f"callback host {host!r} is not in SLUICE_HALF_CALLBACK_ALLOW "
                   f"({', '.join(settings.SLUICE_HALF_CALLBACK_ALLOW) or 'empty'})")
    if address is not None:
        _check_address(address, networks)


def _check_address(address, networks):
    if getattr(address, "ipv4_mapped", None):
        address = address.ipv4_mapped
    if not address.is_global and not any(address in network for network in networks):
        raise Refused(f"{address} is not a public address and no allowed network holds it")
    return address


def _resolve(host, port, timeout):
    """The first address of host that passes the checks; Refused if any of its addresses does not."""
    _, networks = _allow_list()
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as error:
        raise Refused(f"cannot resolve {host}: {error}") from None
    # Every address is checked, not only the first: a name that also resolves to an internal address
    # is refused whole rather than depending on which one the connection would pick.
    addresses = [_check_address(ipaddress.ip_address(info[4][0].split("%")[0]), networks) for info in infos]
    return str(addresses[0])


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout)
        self._address = address

    def connect(self):
        self.sock = socket.create_connection((self._address, self.port), self.timeout)


class _PinnedHTTPS(http.client.HTTPSConnection):
    def __init__(self, host, port, address, timeout):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self):
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def post(url, body, *, timeout):
    """POST body (JSON bytes) to an allowed callback URL; return the answer's bytes (at most 64 KiB).

    Raises Refused for a URL or an address the allow-list does not admit, or for an answer that is
    not a 2xx (a redirect included); OSError and TimeoutError from the network pass through.
    """
    try:
        validate(url)
    except exceptions.InvalidArgument as error:
        raise Refused(str(error)) from None
    parts, host, port = _parts(url)
    address = _resolve(host, port, timeout)
    kind = _PinnedHTTPS if parts.scheme == "https" else _PinnedHTTP
    connection = kind(host, port, address, timeout)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", target, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        if not 200 <= response.status < 300:
            where = f" to {response.getheader('Location')}" if 300 <= response.status < 400 else ""
            raise Refused(f"the callback answered HTTP {response.status}{where} (redirects are not followed)")
        return response.read(MAX_ANSWER_BYTES)
    finally:
        connection.close()
