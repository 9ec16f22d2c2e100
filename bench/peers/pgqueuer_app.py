"""pgqueuer's worker factory (`pgq run bench.peers.pgqueuer_app:create`), on the psycopg driver."""
import contextlib
import os

import psycopg

from pgqueuer import PgQueuer, PsycopgDriver


@contextlib.asynccontextmanager
async def create():
    connection = await psycopg.AsyncConnection.connect(os.environ["PGDSN"], autocommit=True)
    pgq = PgQueuer(PsycopgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job):
        """Nothing (pgqueuer stores no return value; a finished job leaves the queue for its log)."""

    try:
        yield pgq
    finally:
        await connection.close()


if __name__ == "__main__":
    # What `pgq run bench.peers.pgqueuer_app:create` runs, without its command line: with typer 0.29 the
    # 1.6.0 CLI fails before starting (setup_fancy_logger gets the log level as a str).
    import asyncio

    import pgqueuer

    asyncio.run(pgqueuer.run("bench.peers.pgqueuer_app:create"))
