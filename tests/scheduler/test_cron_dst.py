"""Next runs across the 2026 spring-forward and fall-back days of Berlin, London, New York and Lord
Howe (whose clocks move by 30 minutes), for a daily 02:30 job, a job in the skipped hour, an hourly
job and an interval schedule, by the rule in scheduler/cron.py: a skipped wall-clock time fires once
at the first instant after the gap, a repeated one once at its first occurrence, and an interval
ticks in real time whatever the clocks say."""
import datetime
import types

import pytest

from scheduler import cron

UTC = datetime.timezone.utc
# (zone, spring-forward day, fall-back day) in 2026.
ZONES = [
    ("Europe/Berlin", "2026-03-29", "2026-10-25"),  # 02:00 CET -> 03:00 CEST; 03:00 CEST -> 02:00 CET
    ("Europe/London", "2026-03-29", "2026-10-25"),  # 01:00 GMT -> 02:00 BST; 02:00 BST -> 01:00 GMT
    ("America/New_York", "2026-03-08", "2026-11-01"),  # 02:00 EST -> 03:00 EDT; 02:00 EDT -> 01:00 EST
    ("Australia/Lord_Howe", "2026-10-04", "2026-04-05"),  # 02:00 +10:30 -> 02:30 +11; 02:00 +11 -> 01:30 +10:30
]


def cron_schedule(expression, zone):
    return types.SimpleNamespace(kind="cron", cron=expression, timezone=zone)


def interval_schedule(zone, first, seconds):
    tz = cron.zone(zone)
    at = datetime.datetime.fromisoformat(first).replace(tzinfo=tz).astimezone(UTC)
    return types.SimpleNamespace(kind="interval", at=at, interval=datetime.timedelta(seconds=seconds), timezone=zone)


def runs_on(schedule, day):
    """The schedule's runs that fall on a local calendar day, as local HH:MM+offset."""
    tz = cron.zone(schedule.timezone)
    date = datetime.date.fromisoformat(day)
    after = datetime.datetime.combine(date, datetime.time(0), tz).astimezone(UTC) - datetime.timedelta(seconds=1)
    found = []
    for tick in cron.next_ticks(schedule, after, 30):
        local = tick.astimezone(tz)
        if local.date() == date:
            found.append(local.strftime("%H:%M%z"))
    return found


@pytest.mark.parametrize("zone, expression, day, expected", [
    # The daily 02:30 job: in Berlin's and New York's skipped hour on spring-forward day, so it runs
    # once, at 03:00 (the end of the gap); on fall-back day once, at the first 02:30 there is.
    ("Europe/Berlin", "30 2 * * *", "2026-03-29", "03:00+0200"),
    ("Europe/Berlin", "30 2 * * *", "2026-10-25", "02:30+0200"),  # 02:30 happens twice: the first
    ("America/New_York", "30 2 * * *", "2026-03-08", "03:00-0400"),
    ("America/New_York", "30 2 * * *", "2026-11-01", "02:30-0500"),  # 01:00-02:00 repeats, not 02:30
    ("Europe/London", "30 2 * * *", "2026-03-29", "02:30+0100"),  # London skips 01:00-02:00
    ("Europe/London", "30 2 * * *", "2026-10-25", "02:30+0000"),
    ("Australia/Lord_Howe", "30 2 * * *", "2026-10-04", "02:30+1100"),  # the gap is 02:00-02:30
    ("Australia/Lord_Howe", "30 2 * * *", "2026-04-05", "02:30+1030"),  # 01:30-02:00 repeats
    # A job inside each zone's skipped and repeated times.
    ("Europe/London", "30 1 * * *", "2026-03-29", "02:00+0100"),
    ("Europe/London", "30 1 * * *", "2026-10-25", "01:30+0100"),
    ("America/New_York", "30 1 * * *", "2026-11-01", "01:30-0400"),
    ("Australia/Lord_Howe", "15 2 * * *", "2026-10-04", "02:30+1100"),
    ("Australia/Lord_Howe", "45 1 * * *", "2026-04-05", "01:45+1100"),
])
def test_a_daily_job_runs_once_on_the_days_clocks_change(zone, expression, day, expected):
    assert runs_on(cron_schedule(expression, zone), day) == [expected]


@pytest.mark.parametrize("zone, spring, fall", ZONES)
def test_a_daily_0230_job_runs_exactly_once_on_every_day_of_the_year(zone, spring, fall):
    tz = cron.zone(zone)
    start = datetime.datetime(2025, 12, 31, 12, tzinfo=tz).astimezone(UTC)
    ticks = cron.next_ticks(cron_schedule("30 2 * * *", zone), start, 365)
    days = [t.astimezone(tz).date() for t in ticks]
    assert days == [datetime.date(2026, 1, 1) + datetime.timedelta(days=n) for n in range(365)]
    off_time = {t.astimezone(tz).date().isoformat() for t in ticks if t.astimezone(tz).strftime("%H:%M") != "02:30"}
    assert off_time == ({spring} if zone in ("Europe/Berlin", "America/New_York") else set())


@pytest.mark.parametrize("zone, spring, fall, spring_runs, fall_runs", [
    # Each wall-clock hour of the day once: 02:00 does not exist on spring-forward day (it would
    # fire at 03:00, with 03:00 itself: one run), the repeated hour fires on its first pass only.
    ("Europe/Berlin", "2026-03-29", "2026-10-25", ["01:00+0100", "03:00+0200", "04:00+0200"],
     ["01:00+0200", "02:00+0200", "03:00+0100"]),
    ("Europe/London", "2026-03-29", "2026-10-25", ["00:00+0000", "02:00+0100", "03:00+0100"],
     ["00:00+0100", "01:00+0100", "02:00+0000"]),
    ("America/New_York", "2026-03-08", "2026-11-01", ["01:00-0500", "03:00-0400", "04:00-0400"],
     ["00:00-0400", "01:00-0400", "02:00-0500"]),
    # Lord Howe: the hourly 02:00 is in the half-hour gap and fires at 02:30; in autumn 02:00 comes
    # after the repeated half hour, once.
    ("Australia/Lord_Howe", "2026-10-04", "2026-04-05", ["01:00+1030", "02:30+1100", "03:00+1100"],
     ["01:00+1100", "02:00+1030", "03:00+1030"]),
])
def test_an_hourly_job_across_the_transitions(zone, spring, fall, spring_runs, fall_runs):
    hourly = cron_schedule("0 * * * *", zone)
    on_spring, on_fall = runs_on(hourly, spring), runs_on(hourly, fall)
    assert len(on_spring) == (24 if zone == "Australia/Lord_Howe" else 23)
    assert len(on_fall) == 24
    assert len(set(on_spring)) == len(on_spring) and len(set(on_fall)) == len(on_fall)
    assert all(run in on_spring for run in spring_runs), on_spring
    assert all(run in on_fall for run in fall_runs), on_fall
    assert on_spring.index(spring_runs[2]) == on_spring.index(spring_runs[0]) + 2  # nothing between them
    assert on_fall.index(fall_runs[2]) == on_fall.index(fall_runs[0]) + 2


@pytest.mark.parametrize("zone, spring, fall, spring_runs, fall_runs", [
    # Every hour of real time from local midnight: the clock skips or repeats with the zone.
    ("Europe/Berlin", "2026-03-29", "2026-10-25", ["00:00+0100", "01:00+0100", "03:00+0200", "04:00+0200"],
     ["00:00+0200", "01:00+0200", "02:00+0200", "02:00+0100", "03:00+0100"]),
    ("America/New_York", "2026-03-08", "2026-11-01", ["00:00-0500", "01:00-0500", "03:00-0400", "04:00-0400"],
     ["00:00-0400", "01:00-0400", "01:00-0500", "02:00-0500"]),
    ("Australia/Lord_Howe", "2026-10-04", "2026-04-05", ["00:00+1030", "01:00+1030", "02:30+1100", "03:30+1100"],
     ["00:00+1100", "01:00+1100", "01:30+1030", "02:30+1030"]),
])
def test_an_interval_schedule_ticks_in_real_time_across_the_transitions(zone, spring, fall, spring_runs, fall_runs):
    on_spring = runs_on(interval_schedule(zone, f"{spring}T00:00", 3600), spring)
    on_fall = runs_on(interval_schedule(zone, f"{fall}T00:00", 3600), fall)
    assert on_spring[:4] == spring_runs and on_fall[:len(fall_runs)] == fall_runs
    # From midnight, a day 23 hours long has 23 hourly ticks, one 25 hours long 25 (Lord Howe's
    # days of 23.5 and 24.5 hours: 24 and 25).
    assert (len(on_spring), len(on_fall)) == ((24, 25) if zone == "Australia/Lord_Howe" else (23, 25))
