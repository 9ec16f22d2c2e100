"""manage.py schedules list|show|enable|disable|run-now|delete, and scheduler's wrong arguments."""
import re

from scheduler import models, schedules
from tests.schedapp import tasks as sched

APP = {"SLUICE_EXTRA_APPS": "tests.schedapp"}


def test_list_and_show(transactional_db, manage):
    schedules.create(name="berlin-night", task=sched.beat, cron="30 2 * * *", timezone="Europe/Berlin", args=["b"],
                     catch_up="all", catch_up_limit=4)
    schedules.create(name="pulse", task=sched.beat, every=90, args=["p"])
    schedules.disable("pulse")
    listed = manage("schedules", "list", env=APP)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["NAME", "TASK", "TIMING", "TIMEZONE", "ENABLED", "CATCH-UP", "NEXT-RUN", "LAST-TICK",
                                "SOURCE"]
    assert re.match(r"berlin-night +tests\.schedapp\.tasks\.beat +cron 30 2 \* \* \* +Europe/Berlin +yes +all \(up to 4\) "
                    r"+\S+ +- +database$", lines[1])
    assert re.match(r"pulse .* every 90s +UTC +no +once +- +- +database$", lines[2])
    assert lines[-1] == "2 schedule(s)."
    shown = manage("schedules", "show", "berlin-night", "--next", "3", env=APP)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^timing +cron 30 2 \* \* \*$", shown.stdout, re.M)
    runs = re.findall(r"^(\S+Z?\S*) +(\S+T02:30:00\+0[12]:00)$", shown.stdout, re.M)
    assert len(runs) == 3, shown.stdout
    disabled = manage("schedules", "show", "pulse", env=APP)
    assert "No next run (disabled)." in disabled.stdout


def test_enable_disable_run_now_delete(transactional_db, manage):
    schedules.create(name="pulse", task=sched.beat, every=3600, args=["p"])
    assert manage("schedules", "disable", "pulse", env=APP).stdout.strip() == "Disabled schedule pulse."
    assert not schedules.get("pulse").enabled
    enabled = manage("schedules", "enable", "pulse", env=APP)
    assert enabled.returncode == 0 and enabled.stdout.startswith("Enabled schedule pulse; next run 20")
    ran = manage("schedules", "run-now", "pulse", env=APP)
    assert ran.returncode == 0, ran.stderr
    task_id = re.match(r"Enqueued task (\S+) for schedule pulse\.$", ran.stdout.strip())[1]
    tick = models.ScheduleTick.objects.get()
    assert (str(tick.task_id), tick.trigger) == (task_id, "manual")
    shown = manage("schedules", "show", "pulse", env=APP)
    assert re.search(rf"manual +0 +{task_id} +-$", shown.stdout, re.M), shown.stdout
    deleted = manage("schedules", "delete", "pulse", env=APP)
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "Deleted schedule pulse.")
    assert not models.Schedule.objects.exists()


def test_wrong_arguments_get_a_one_line_error_exit_code_2_and_change_nothing(transactional_db, command):
    schedules.create(name="pulse", task=sched.beat, every=3600, args=["p"])
    before = list(models.Schedule.objects.values())
    for args, message in [
        (("schedules", "show", "nope"), "No schedule named 'nope'."),
        (("schedules", "enable", "nope"), "No schedule named 'nope'."),
        (("schedules", "run-now", "nope"), "No schedule named 'nope'."),
        (("schedules", "delete", "nope"), "No schedule named 'nope'."),
        (("schedules", "show", "pulse", "--next", "0"), "must be at least 1"),
        (("schedules", "show", "pulse", "--next", "100000000"), "must be at most 1000"),
        (("schedules", "show", "pulse", "--ticks", "1001"), "must be at most 1000"),
        (("schedules", "pause", "pulse"), "invalid choice: 'pause'"),
        (("schedules",), "the following arguments are required"),
        (("scheduler", "--batch", "x"), "is not a whole number"),
    ]:
        done = command(*args, env=APP)
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        if "No schedule" in message:
            assert done.stderr.strip() == f"CommandError: {message}"
    assert list(models.Schedule.objects.values()) == before
    assert not models.ScheduleTick.objects.exists() and not models.TaskResult.objects.exists()


def test_more_wrong_input_gets_one_line_errors_exit_code_2_and_changes_nothing(transactional_db, command):
    schedules.create(name="pulse", task=sched.beat, every=3600, args=["p"])
    schedules.create(name="orphan", task=sched.beat, every=3600, args=["o"])
    schedules.create(name="broken", task=sched.beat, cron="0 3 * * *")
    schedules.disable("broken")
    # A task renamed away from under its schedule, and a timing edited into nonsense by hand.
    models.Schedule.objects.filter(name="orphan").update(task_name="tests.schedapp.tasks.gone")
    models.Schedule.objects.filter(name="broken").update(cron="0 3 * *")
    before = list(models.Schedule.objects.order_by("id").values())
    for args, message in [
        (("schedules", "disable", "nope"), "CommandError: No schedule named 'nope'."),
        (("schedules", "delete", ""), "CommandError: No schedule named ''."),
        (("schedules", "run-now", "orphan"), "CommandError: No task named 'tests.schedapp.tasks.gone' is registered"),
        (("schedules", "enable", "broken"), "CommandError: Invalid schedule: a cron expression has five fields"),
        (("schedules", "show", "broken"), None),  # disabled: shown, with no next run
        (("schedules", "enable"), "the following arguments are required: name"),
        (("schedules", "show", "pulse", "--next", "x"), "'x' is not a whole number"),
        (("schedules", "show", "pulse", "--ticks", "-1"), "must be at least 1"),
        (("schedules", "list", "--task"), "expected one argument"),
        (("schedules", "delete", "pulse", "orphan"), "unrecognized arguments: orphan"),
    ]:
        done = command(*args, env=APP)
        if message is None:
            assert done.returncode == 0 and "No next run (disabled)." in done.stdout, (args, done.stderr)
            continue
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
        if message.startswith("CommandError"):
            assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
    assert list(models.Schedule.objects.order_by("id").values()) == before
    assert not models.ScheduleTick.objects.exists() and not models.TaskResult.objects.exists()


def test_show_lists_the_next_runs_across_a_dst_change_in_the_zone_and_utc(transactional_db, manage):
    schedules.create(name="berlin-night", task=sched.beat, cron="30 2 * * *", timezone="Europe/Berlin", args=["b"])
    # Moved ahead to the day before the spring-forward of 28 March 2027 (02:30 does not exist).
    models.Schedule.objects.filter(name="berlin-night").update(next_run_at="2027-03-27T01:30:00+00:00")
    shown = manage("schedules", "show", "berlin-night", "--next", "3", env=APP)
    assert shown.returncode == 0, shown.stderr
    table = shown.stdout[shown.stdout.index("NEXT-RUN (UTC)"):].splitlines()[:4]
    assert [line.split() for line in table] == [
        ["NEXT-RUN", "(UTC)", "LOCAL", "(Europe/Berlin)"],
        ["2027-03-27T01:30:00+00:00", "2027-03-27T02:30:00+01:00"],
        ["2027-03-28T01:00:00+00:00", "2027-03-28T03:00:00+02:00"],
        ["2027-03-29T00:30:00+00:00", "2027-03-29T02:30:00+02:00"]]
    listed = manage("schedules", "list", env=APP)
    assert re.search(r"^berlin-night .* 2027-03-27T01:30:00\+00:00 +- +database$", listed.stdout, re.M), listed.stdout
