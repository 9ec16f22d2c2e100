"""manage.py apikeys create|list|revoke: the REST API's keys (stored hashed, shown once)."""
from django.contrib.auth import get_user_model
from django.core.management.base import CommandError
from django.utils import timezone

from api import keys
from queueing import offsets
from queueing.management.base import EngineCommand


class Command(EngineCommand):
    help = "Create, list and revoke API keys."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="{create,list,revoke}")
        create = actions.add_parser("create", help="create a key and print it (the only time it is shown)")
        create.add_argument("name", help="what the key is for, e.g. billing-service")
        create.add_argument("--user", required=True, help="the account the key acts for (a username)")
        create.add_argument("--scope", action="append", required=True, dest="scopes",
                            help="produce:PATTERN, consume:PATTERN, task:PATTERN or operate; repeat for more")
        create.add_argument("--expires-in", help="an ISO-8601 duration, e.g. P90D (default: never)")
        actions.add_parser("list", help="list keys: prefix, name, user, state, scopes, last use")
        revoke = actions.add_parser("revoke", help="revoke a key, by its prefix (or the whole key)")
        revoke.add_argument("prefix")

    def handle(self, *args, action, **options):
        getattr(self, f"do_{action}")(**options)

    def do_create(self, *, name, user, scopes, expires_in, **options):
        account = get_user_model().objects.filter(username=user).first()
        if account is None:
            raise CommandError(f"no user named {user!r}", returncode=2)
        expires_at = timezone.now() + offsets.parse_duration(expires_in) if expires_in else None
        key, text = keys.create(name, user=account, scopes=scopes, expires_at=expires_at)
        self.stderr.write(f"Created API key {key.prefix} ({key.name}); it is shown only this once:")
        self.stdout.write(text)

    def do_list(self, **options):
        listed = list(keys.listing())  # read first: a database error is the one line printed, not after a header
        self.stdout.write(f"{'PREFIX':<11} {'NAME':<24} {'USER':<16} {'STATE':<8} {'EXPIRES':<20} "
                          f"{'LAST USE':<20} SCOPES")
        for key in listed:
            self.stdout.write(f"{key.prefix:<11} {key.name[:24]:<24} {key.user.get_username()[:16]:<16} "
                              f"{keys.state(key):<8} {_moment(key.expires_at):<20} {_moment(key.last_used_at):<20} "
                              f"{' '.join(key.scopes)}")

    def do_revoke(self, *, prefix, **options):
        key = keys.revoke(prefix)
        self.stdout.write(f"Revoked API key {key.prefix} ({key.name}) at {_moment(key.revoked_at)}.")


def _moment(value):
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"
