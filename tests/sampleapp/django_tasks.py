"""Django tasks (django.tasks.task) of the sample app, enqueued through scheduler.backends.SluiceBackend."""
from django.tasks import task


@task(queue_name="sample")
def multiply(a, b):
    return a * b


@task(queue_name="sample", takes_context=True)
def which_run(context, label):
    return {"label": label, "attempt": context.attempt, "id": context.task_result.id}


@task(queue_name="sample")
def explode():
    raise LookupError("nothing here")
