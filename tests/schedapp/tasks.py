"""Tasks for the schedule tests, and one schedule declared in code."""
from scheduler import schedules, task


@schedules.periodic(cron="0 3 * * *", timezone="Europe/Paris", name="nightly-report", kwargs={"kind": "nightly"})
@task(queue="sched")
def report(kind):
    return kind


@task(queue="sched")
def beat(name):
    """What the schedulers' acceptance test enqueues: a worker never runs it, the checker counts it."""
    return name
