"""The console's task and schedule pages; thin over scheduler.selectors, control and schedules."""
from django.contrib import messages
from django.db import transaction
from django.db.models import Count
from django.shortcuts import redirect, render

from console import access, audit
from scheduler import control, exceptions, models, schedules, selectors

PAGE = 50


@access.viewer
def tasks_page(request):
    """Tasks by state, and the newest of one state (or all) with args, result, error and progress."""
    state = request.GET.get("state", "")
    by_state = dict(models.TaskResult.objects.values_list("state").annotate(n=Count("id")).order_by())
    rows = selectors.tasks(state=state or None)[:PAGE]
    return render(request, "console/tasks.html", {
        "by_state": [(value, label, by_state.get(value, 0)) for value, label in models.State.choices],
        "state": state, "tasks": rows})


@access.operator
def task_action(request, task_id, action):
    """Retry a failed or cancelled task, or cancel one not started, through scheduler.control."""
    actor = request.user.get_username()
    try:
        with transaction.atomic():
            before = models.TaskResult.objects.filter(id=task_id).values_list("state", flat=True).first()
            result = {"retry": control.retry, "cancel": control.cancel}[action](task_id)
            audit.record(actor=actor, action=f"task {action}", target=str(task_id), before={"state": before},
                         after={"state": result.state})
    except exceptions.SchedulerError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"task {task_id}: {result.state}")
    return redirect("console:tasks")


@access.viewer
def schedules_page(request):
    rows = list(models.Schedule.objects.order_by("name")[:200])
    return render(request, "console/schedules.html", {
        "schedules": [(row, schedules.next_runs(row, count=3)) for row in rows]})


@access.operator
def schedule_action(request, name, action):
    """Enable, disable or run a schedule now, through scheduler.schedules; audited."""
    actor = request.user.get_username()
    try:
        with transaction.atomic():
            before = models.Schedule.objects.filter(name=name).values_list("enabled", flat=True).first()
            done = {"enable": schedules.enable, "disable": schedules.disable, "run": schedules.run_now}[action](name)
            after = {"task": str(done.id)} if action == "run" else {"enabled": done.enabled}
            audit.record(actor=actor, action=f"schedule {action}", target=name, before={"enabled": before},
                         after=after)
    except exceptions.SchedulerError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"schedule {name}: {action} done")
    return redirect("console:schedules")
