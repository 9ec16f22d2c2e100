"""When a schedule's ticks fall: cron expressions (through croniter), fixed intervals and one-off
times, in an IANA time zone, with one exact rule for the days clocks change.

croniter walks naive wall-clock times only (pure calendar arithmetic); this module alone turns a
wall-clock time into an instant, with zoneinfo, so croniter's own DST code (and its open bug #258
with Lord Howe's 30-minute shift, where get_next, get_prev and match disagree) is never used:

- a wall-clock time that exists once fires at that instant;
- a wall-clock time skipped by a spring-forward gap fires once, at the first instant after the
  gap (02:30 in New York on 8 March 2026 fires at 03:00 EDT); several named times inside one gap
  fire once together;
- a wall-clock time that exists twice (fall back) fires once, at its first occurrence (01:30 in
  New York on 1 November 2026 fires at 01:30 EDT, not again at 01:30 EST). This holds for every
  expression, so `*/15 * * * *` does not fire during the repeated hour's second pass: use an
  interval schedule for "every N minutes of real time".

Instants are aware datetimes in UTC.
"""
import datetime
import zoneinfo

from croniter import croniter, CroniterError

from scheduler import exceptions

UTC = datetime.timezone.utc
SECOND = datetime.timedelta(seconds=1)
# A bound on the wall-clock times looked at for one answer: 'at 00:00 on 29 February, a Monday'
# recurs within 28 years; croniter gives up after it too.
MAX_YEARS = 50


def zone(name):
    """The ZoneInfo of an IANA name; raise InvalidSchedule."""
    if not isinstance(name, str) or not name:
        raise exceptions.InvalidSchedule(reason="a time zone is an IANA name such as Europe/Paris")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise exceptions.InvalidSchedule(reason=f"unknown time zone {name!r} (use an IANA name such as "
                                                "Europe/Paris)") from None


# The fields in order, with what each accepts, for the error that names the bad one.
FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31, L for the last day, nW for the weekday nearest day n"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT (0 and 7 are Sunday), d#n for the nth d of the month, Ld for the last d"),
)
SECONDS_FIELD = ("second", "0-59")


def check_cron(expression):
    """Raise InvalidSchedule unless expression is five cron fields, or six with seconds first
    (L, W, # and names allowed; dates that never occur, such as 31 February, refused). The error
    is one line and names the field at fault."""
    fields = expression.split() if isinstance(expression, str) else []
    if len(fields) not in (5, 6):
        raise exceptions.InvalidSchedule(
            reason=f"a cron expression has five fields (minute hour day-of-month month day-of-week), or six with "
                   f"seconds first, not {expression!r}")
    if _valid(fields, strict=True):
        return
    if _valid(fields, strict=False):
        raise exceptions.InvalidSchedule(
            reason=f"invalid cron expression {expression!r}: its day-of-month and month never occur together")
    names = ((SECONDS_FIELD,) if len(fields) == 6 else ()) + FIELDS
    for index, (name, allowed) in enumerate(names):
        # croniter says "out of range" without saying where: the field at fault is the one that,
        # replaced by *, makes the rest acceptable.
        if _valid(fields[:index] + ["*"] + fields[index + 1:], strict=False):
            raise exceptions.InvalidSchedule(
                reason=f"invalid cron expression {expression!r}: {name} field {fields[index]!r} is not valid "
                       f"(allowed: {allowed})")
    raise exceptions.InvalidSchedule(reason=f"invalid cron expression {expression!r}: more than one field is not "
                                            "valid")


def _valid(fields, *, strict):
    try:
        return croniter.is_valid(" ".join(fields), second_at_beginning=True, strict=strict)
    except (CroniterError, ValueError, TypeError):
        return False


def instant(wall, tz):
    """The instant a naive wall-clock time fires in tz, by the rule above."""
    first = wall.replace(tzinfo=tz, fold=0)
    utc = first.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) == wall:
        return utc  # exists (the first occurrence, if twice)
    # In a gap: the two readings of the wall time (the offsets before and after the change) land on
    # either side of the transition; bisect between them, to the second, for its first instant.
    low, high = sorted(int(wall.replace(tzinfo=tz, fold=f).timestamp()) for f in (0, 1))
    offset = datetime.datetime.fromtimestamp(low, tz).utcoffset()
    while high - low > 1:
        middle = (low + high) // 2
        if datetime.datetime.fromtimestamp(middle, tz).utcoffset() == offset:
            low = middle
        else:
            high = middle
    return datetime.datetime.fromtimestamp(high, UTC)


def next_cron(expression, tz, after):
    """The first tick of a cron expression strictly after the instant after."""
    wall = after.astimezone(tz).replace(tzinfo=None, fold=0)
    # A wall-clock time before after's cannot fire after it. In a repeated hour's second pass the
    # wall clock reads earlier than times already fired: those map to their first occurrence
    # (<= after) and are passed over.
    try:
        walker = croniter(expression, wall, second_at_beginning=True, max_years_between_matches=MAX_YEARS)
    except (CroniterError, ValueError, TypeError):
        check_cron(expression)  # an expression stored by hand: raise InvalidSchedule naming its fault
        raise
    while True:
        try:
            candidate = walker.get_next(datetime.datetime)
        except CroniterError:
            return None
        when = instant(candidate, tz)
        if when > after:
            return when


def next_tick(schedule, after):
    """The first tick of schedule (a Schedule or anything with its timing fields) strictly after
    the instant after; None when it has no more (a one-off that is done)."""
    kind = schedule.kind
    if kind == "cron":
        return next_cron(schedule.cron, zone(schedule.timezone), after)
    if kind == "interval":
        start = schedule.at
        if after < start:
            return start
        # Ticks are start + k * interval, in real time: the zone does not move them.
        steps = (after - start) // schedule.interval + 1
        return start + steps * schedule.interval
    if kind == "once":
        return schedule.at if schedule.at > after else None
    raise exceptions.InvalidSchedule(reason=f"unknown schedule kind {kind!r}")


def next_ticks(schedule, after, count):
    """The next count ticks strictly after after (fewer when the schedule ends)."""
    found = []
    while len(found) < count:
        after = next_tick(schedule, after)
        if after is None:
            break
        found.append(after)
    return found


def local_wall_time(text, tz):
    """An aware instant for an ISO 8601 time: with an offset as given, without one as a wall-clock
    time in tz (by the same gap and fold rule). Raise InvalidSchedule."""
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise exceptions.InvalidSchedule(reason=f"{text!r} is not an ISO 8601 time such as 2026-12-24T18:00") from None
    if parsed.tzinfo is not None:
        return parsed.astimezone(UTC)
    return instant(parsed, tz)
