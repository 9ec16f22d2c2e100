"""pgqueuer's worker factory (`pgq run bench.peers.pgqueuer_app:create`), on the psycopg driver."""
import os

import psycopg

from pgqueuer import PgQueuer, PsycopgDriver


async def create():
    connection = await psycopg.AsyncConnection.connect(os.environ["PGDSN"], autocommit=True)
    pgq = PgQueuer(PsycopgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job):
        """Nothing (pgqueuer stores no return value; a finished job leaves the queue for its log)."""

    return pgq
