"""A queue checker in the manner of Jepsen's: reads the histories the agents wrote and reports anomalies.

Each agent writes its own file, one event a line, in the order it happened (agents.py):

    invoke ID KEY               a send is about to start (producer)
    ok ID PARTITION OFFSET      the send returned: the record is acknowledged at that place
    fail ID                     the send raised: whether it was stored is unknown (indeterminate)
    aborted ID KEY              sent in a transaction that was rolled back: it must never be read
    read MEMBER GENERATION PARTITION OFFSET ID [AT]  a consumer was handed a record (AT: when the
                                poll returned, on the machine's monotonic clock, shared by processes)
    commit MEMBER GENERATION ok|refused|unknown    the consumer's offset commit after a poll
    rewind MEMBER               the consumer lost its connection and went back to its committed offsets
    late DETAIL...              a reader saw an offset become visible behind one it had already seen

A consumer's "run" is what it read in one generation between two rewinds: within a run the offsets
of a partition must go up by exactly one, and a run must start no further than one past the highest
offset anyone had read before it began (a run starts at the group's committed offset, and only read
records are committed). Reading the same (partition, offset, id) again in a later
run (after a crash, a rewind or a rebalance) is a redelivery, which at-least-once allows; reading
one id at two places is a duplicate. `python tests/acceptance/checker.py DIR` prints the counts.
"""
import collections
import dataclasses
import sys
from pathlib import Path

ANOMALIES = (
    "lost",  # acknowledged, never read by any consumer
    "uncommitted",  # acknowledged and read, but never in a batch whose offset commit was accepted
    "duplicated",  # one id read at two different (partition, offset)
    "misplaced",  # read somewhere else than where its acknowledgement said
    "unexpected",  # read, but never sent
    "aborted_read",  # read, but sent in a transaction that rolled back
    "inconsistent_offsets",  # two different ids at the same (partition, offset)
    "non_monotonic",  # within a run, a partition's offsets went back (or repeated)
    "skipped",  # within a run, a partition's offsets jumped by more than one; or a run started past them
    "holes",  # offsets below a partition's end that no consumer ever read
    "key_order",  # one producer's acknowledged sends of one key not stored (or read) in send order
    "late_commits",  # a reader saw an offset appear behind one it had seen
)


@dataclasses.dataclass(frozen=True)
class Read:
    run: str  # member, generation and rewind count: "c1/g4/r0"
    generation: int
    partition: int
    offset: int
    id: str
    committed: bool  # an offset commit of the same run was accepted (or may have been) after it
    at: float | None = None  # when the poll returned (monotonic clock), if the agent logged it


@dataclasses.dataclass
class History:
    invoked: dict = dataclasses.field(default_factory=dict)  # id -> (producer, send index, key)
    acknowledged: dict = dataclasses.field(default_factory=dict)  # id -> (partition, offset)
    failed: set = dataclasses.field(default_factory=set)
    aborted: set = dataclasses.field(default_factory=set)
    reads: list = dataclasses.field(default_factory=list)  # [Read] in each member's order
    late: list = dataclasses.field(default_factory=list)


def parse(logs):
    """Build one History from agent logs: an iterable of (agent name, iterable of lines)."""
    history = History()
    for agent, lines in logs:
        _parse_agent(history, agent, lines)
    return history


def _parse_agent(history, agent, lines):
    rewinds = collections.Counter()  # member -> rewinds so far
    reads = []  # [run, generation, partition, offset, id, committed], in the order read
    pending = collections.defaultdict(list)  # run -> indexes of reads no commit has covered yet
    for line in lines:
        parts = line.split()
        kind = parts[0] if parts else None
        if kind == "invoke":
            history.invoked[parts[1]] = (agent, len(history.invoked), parts[2] if len(parts) > 2 else None)
        elif kind == "ok":
            history.acknowledged[parts[1]] = (int(parts[2]), int(parts[3]))
        elif kind == "fail":
            history.failed.add(parts[1])
        elif kind == "aborted":
            history.aborted.add(parts[1])
        elif kind == "read":
            member, generation, partition, offset, ident = parts[1:6]
            run = f"{member}/g{generation}/r{rewinds[member]}"
            pending[run].append(len(reads))
            at = float(parts[6]) if len(parts) > 6 else None
            reads.append([run, int(generation), int(partition), int(offset), ident, False, at])
        elif kind == "commit":
            member, generation, outcome = parts[1:4]
            # unknown: the reply was lost, so it may have been stored. A refused commit covers
            # nothing; the reads stay pending in case a later commit of the same run covers them.
            if outcome in ("ok", "unknown"):
                for index in pending.pop(f"{member}/g{generation}/r{rewinds[member]}", []):
                    reads[index][5] = True
        elif kind == "rewind":
            rewinds[parts[1]] += 1
        elif kind == "late":
            history.late.append(" ".join(parts[1:]))
    history.reads.extend(Read(*fields) for fields in reads)


def read_logs(directory):
    """Parse every *.log file of a folder (one per agent)."""
    paths = sorted(Path(directory).glob("*.log"))
    return parse((path.stem, path.read_text().splitlines()) for path in paths)


def check(history, *, ends=None):
    """Return {anomaly: [examples]} for every name of ANOMALIES; all empty for a correct queue.

    ends, if given, is {partition: log end offset} from the database: reads must then cover every
    offset below it, including a tail no consumer got to.
    """
    found = {name: [] for name in ANOMALIES}
    places = collections.defaultdict(set)  # id -> {(partition, offset)} read
    ids_at = collections.defaultdict(set)  # (partition, offset) -> {id} read or acknowledged
    committed = set()
    for read in history.reads:
        places[read.id].add((read.partition, read.offset))
        ids_at[(read.partition, read.offset)].add(read.id)
        if read.committed:
            committed.add(read.id)
    for ident, place in history.acknowledged.items():
        ids_at[place].add(ident)

    for ident, place in sorted(history.acknowledged.items()):
        if ident not in places:
            found["lost"].append(ident)
        elif ident not in committed:
            found["uncommitted"].append(ident)
        elif place not in places[ident]:
            found["misplaced"].append((ident, place, sorted(places[ident])))
    for ident, where in sorted(places.items()):
        if len(where) > 1:
            found["duplicated"].append((ident, sorted(where)))
        if ident in history.aborted:
            found["aborted_read"].append(ident)
        elif ident not in history.invoked:
            found["unexpected"].append(ident)
    found["inconsistent_offsets"] = sorted((place, sorted(ids)) for place, ids in ids_at.items() if len(ids) > 1)
    _check_runs(history, found)
    _check_run_starts(history, found)
    _check_coverage(history, ends, found)
    _check_key_order(history, found)
    found["late_commits"] = list(history.late)
    return found


def _check_runs(history, found):
    """Within a run, each partition's offsets go up by exactly one, and each key's sends come in order."""
    last = {}  # (run, partition) -> offset
    last_send = {}  # (run, producer, key) -> send index
    for read in history.reads:
        slot = (read.run, read.partition)
        previous = last.get(slot)
        if previous is not None and read.offset <= previous:
            found["non_monotonic"].append((read.run, read.partition, previous, read.offset))
            continue  # a step back is reported once, not again as a key out of order
        if previous is not None and read.offset > previous + 1:
            found["skipped"].append((read.run, read.partition, previous, read.offset))
        last[slot] = read.offset
        if read.id in history.invoked:
            producer, index, key = history.invoked[read.id]
            stream = (read.run, producer, key)
            if last_send.get(stream, -1) > index:
                found["key_order"].append(("read", read.run, producer, key, read.id))
            last_send[stream] = max(index, last_send.get(stream, -1))


def _check_run_starts(history, found):
    """A run starts at most one past the highest offset of its partition read before the run began.

    A run starts at the committed offset, and a commit covers only reads logged before it was made,
    so that bound holds whatever the timing; offset 0 (the log start) is always a valid start.
    Only reads with a time take part.
    """
    timed = sorted((r for r in history.reads if r.at is not None), key=lambda r: r.at)
    highest = {}  # partition -> highest offset read so far
    started = set()
    batch = []  # reads with the same time: none of them was read "before" the others
    for index, read in enumerate(timed):
        batch.append(read)
        if index + 1 < len(timed) and timed[index + 1].at == read.at:
            continue
        for first in batch:
            if (first.run, first.partition) in started:
                continue
            started.add((first.run, first.partition))
            bound = highest.get(first.partition, -1) + 1
            if first.offset > bound and first.offset != 0:
                found["skipped"].append(("run start", first.run, first.partition, bound, first.offset))
        for seen in batch:
            highest[seen.partition] = max(highest.get(seen.partition, -1), seen.offset)
        batch = []


def _check_coverage(history, ends, found):
    """The union of all reads covers each partition's offsets from 0 to its end without a hole."""
    seen = collections.defaultdict(set)
    for read in history.reads:
        seen[read.partition].add(read.offset)
    for place in history.acknowledged.values():  # an acknowledged offset is below the end too
        seen.setdefault(place[0], set())
    partitions = set(seen) | set(ends or {})
    for partition in sorted(partitions):
        offsets = seen[partition]
        end = (ends or {}).get(partition, max(offsets, default=-1) + 1)
        missing = sorted(set(range(end)) - offsets)
        beyond = sorted(o for o in offsets if o >= end)
        if missing:
            found["holes"].append((partition, len(missing), missing[:10]))
        if beyond:
            found["holes"].append((partition, "read past the log end", beyond[:10]))


def _check_key_order(history, found):
    """One producer's acknowledged sends of one key land on one partition at increasing offsets."""
    streams = collections.defaultdict(list)  # (producer, key) -> [(send index, partition, offset)]
    for ident, (partition, offset) in history.acknowledged.items():
        if ident in history.invoked:
            producer, index, key = history.invoked[ident]
            streams[(producer, key)].append((index, partition, offset))
    for (producer, key), sends in sorted(streams.items()):
        sends.sort()
        partitions = {p for _, p, _ in sends}
        offsets = [o for _, _, o in sends]
        if len(partitions) > 1 or any(a >= b for a, b in zip(offsets, offsets[1:])):
            found["key_order"].append(("stored", producer, key))


def counts(found):
    return {name: len(examples) for name, examples in found.items()}


def summary(history, found):
    """One paragraph for a failing assertion: the counts, then a few examples of each anomaly."""
    lines = [
        f"{len(history.invoked)} invoked, {len(history.acknowledged)} acknowledged, {len(history.failed)} "
        f"indeterminate, {len(history.aborted)} aborted, {len(history.reads)} reads",
        "counts: " + ", ".join(f"{name}={count}" for name, count in counts(found).items()),
    ]
    lines += [f"  {name}: {examples[:5]}" for name, examples in found.items() if examples]
    return "\n".join(lines)


if __name__ == "__main__":
    parsed = read_logs(sys.argv[1])
    anomalies = check(parsed)
    print(summary(parsed, anomalies))
    sys.exit(1 if any(anomalies.values()) else 0)
