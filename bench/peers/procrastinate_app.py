"""procrastinate's app (`procrastinate --app bench.peers.procrastinate_app.app worker`)."""
import os

import procrastinate

app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=os.environ["BENCH_PEER_DATABASE_URL"]))


@app.task(name="noop")
def noop():
    """Nothing (procrastinate keeps the job's status, not a return value)."""
