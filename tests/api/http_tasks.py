"""Tasks for the API's tests: two may be submitted over HTTP, one may not."""
from scheduler import task


@task(queue="apitest", http=True)
def add(a, b=0):
    return a + b


@task(queue="apitest", http=True)
def total(numbers):
    return sum(numbers)


@task(queue="apitest", http=True)
def fails(reason):
    raise ValueError(reason)


@task(queue="apitest")
def internal():
    return "not for HTTP"
