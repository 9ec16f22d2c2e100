"""manage.py replay SOURCE_TOPIC: re-publish dead letters, or any range of a topic, to a topic."""
import argparse
import sys

from django.core.management.base import CommandError

from queueing import exceptions, loops, offsets, replay, topics
from queueing.management.base import EngineCommand, positive, whole
from queueing.management.progress import ProgressBar


def _whole(text):
    value = whole(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


def _moment(text):
    try:
        return offsets.parse_datetime(text)
    except exceptions.InvalidArgument as error:
        raise argparse.ArgumentTypeError(error.data["reason"]) from None


def _single(text):
    try:
        return replay.parse_offset_spec(text)
    except exceptions.InvalidArgument as error:
        raise argparse.ArgumentTypeError(error.data["reason"]) from None


class Command(EngineCommand):
    help = (
        "Re-publish records of SOURCE_TOPIC (dead letters, or any range of any topic) to --to-topic, or with "
        "--to-original each dead letter to the topic it failed on, for the group that failed it only (--all-groups: "
        "for every group reading that topic). Joins no consumer group, so no offsets move. "
        "Each copy carries the header sluice.replay.origin=TOPIC-PARTITION@OFFSET. --dry-run shows the plan."
    )

    def add_arguments(self, parser):
        parser.add_argument("source", metavar="SOURCE_TOPIC")
        parser.add_argument("--partition", type=_whole, action="append", metavar="P", help="repeatable (default: all)")
        parser.add_argument("--from-offset", type=_whole, metavar="N", help="first offset replayed (inclusive)")
        parser.add_argument("--to-offset", type=_whole, metavar="M", help="end offset (exclusive: M is not replayed)")
        parser.add_argument("--since", type=_moment, metavar="ISO8601", help="records stamped at or after this")
        parser.add_argument("--until", type=_moment, metavar="ISO8601", help="records stamped before this")
        parser.add_argument("--key", help="only records with this key")
        parser.add_argument(
            "--offset", type=_single, action="append", metavar="P:N",
            help="one record, partition P offset N; repeatable; combines with no other selection",
        )
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--to-topic", metavar="TOPIC", help="send the copies to this (existing) topic")
        target.add_argument(
            "--to-original", action="store_true",
            help="send each dead letter back to the topic its sluice.dlq.topic header names, for the group its "
                 "sluice.dlq.group header names only (other groups' workers pass over it)",
        )
        parser.add_argument(
            "--all-groups", action="store_true",
            help="with --to-original: for every group reading the original topic, not only the one that failed",
        )
        parser.add_argument("--dry-run", action="store_true", help="print what would be replayed; send nothing")
        parser.add_argument("--limit", type=positive, metavar="N", help="replay at most N records")
        parser.add_argument(
            "--skip-invalid", action="store_true",
            help="leave out records that cannot be replayed (default: list them and send nothing)",
        )
        parser.add_argument("--batch-size", type=positive, default=500, help="records per read and send")

    def handle(self, *args, source, dry_run, skip_invalid, batch_size, **options):
        self._check(options)
        self.single = bool(options["offset"])
        plan = replay.plan_replay(
            source,
            to_topic=options["to_topic"],
            to_original=options["to_original"],
            all_groups=options["all_groups"],
            partitions=options["partition"],
            from_offset=options["from_offset"],
            to_offset=options["to_offset"],
            since=options["since"],
            until=options["until"],
            key=options["key"],
            offsets=options["offset"],
            limit=options["limit"],
        )
        if plan.count == 0:
            self.stdout.write(f"Nothing to replay: no record of {source} matched. {self._bounds(source)}")
            return
        if dry_run:
            self._print_plan(plan)
            replay.check_plan(plan, skip_invalid=skip_invalid)
            self.stdout.write("Dry run: nothing sent. Drop --dry-run to replay.")
            return
        replay.check_plan(plan, skip_invalid=skip_invalid)
        self._run(plan, skip_invalid, batch_size, options.get("stderr") or sys.stderr)

    def _check(self, options):
        if options["all_groups"] and not options["to_original"]:
            raise CommandError("--all-groups goes with --to-original", returncode=2)
        if options["offset"]:
            others = [
                flag for flag, name in (
                    ("--partition", "partition"), ("--from-offset", "from_offset"), ("--to-offset", "to_offset"),
                    ("--since", "since"), ("--until", "until"), ("--key", "key"),
                ) if options[name] is not None
            ]
            if others:
                raise CommandError(
                    f"--offset names single records; it does not combine with {', '.join(others)}", returncode=2
                )
        start, end = options["from_offset"], options["to_offset"]
        if start is not None and end is not None and start >= end:
            raise CommandError(
                f"--from-offset {start} must be below --to-offset {end} (the end offset is exclusive)", returncode=2
            )
        since, until = options["since"], options["until"]
        if since is not None and until is not None and since >= until:
            raise CommandError(
                f"--since {since.isoformat()} must be before --until {until.isoformat()}", returncode=2
            )

    def _run(self, plan, skip_invalid, batch_size, stream):
        valid = plan.count - (plan.invalid_count if skip_invalid else 0)
        self.stderr.write(
            f"Replaying {valid} record(s) of {plan.source} to {self._targets(plan)}.", style_func=lambda text: text
        )
        bar = ProgressBar(stream, plan.count, label="replay")
        progress = {}
        stopping = []

        def on_progress(done, partition, offset):
            progress[partition] = offset
            bar.update(done, f"at {plan.source}-{partition}@{offset}")

        try:
            with loops.on_stop(lambda: stopping.append(True)):
                result = replay.execute_replay(
                    plan, skip_invalid=skip_invalid, batch_size=batch_size,
                    on_progress=on_progress, should_stop=lambda: bool(stopping),
                )
        except BaseException:
            bar.finish()
            if progress:
                self.stderr.write(
                    f"Replay failed part-way; last replayed {self._last(plan, progress.items())}. "
                    f"{self._resume(plan, progress)}"
                )
            raise
        bar.finish()
        last = self._last(plan, result.last)
        if result.stopped:
            self.stdout.write(f"Stopped after {result.replayed} of {valid} record(s); last replayed {last}.")
            raise CommandError(f"replay stopped before the end. {self._resume(plan, dict(result.last))}", returncode=1)
        skipped = f"; skipped {result.skipped} that cannot be replayed" if result.skipped else ""
        self.stdout.write(
            f"Replayed {result.replayed} record(s) of {plan.source} to {self._targets(plan)}{skipped}; "
            f"last replayed {last}."
        )

    def _print_plan(self, plan):
        target = plan.to_topic or ("their original topics, for every group reading them" if plan.all_groups
                                   else "their original topics, for the group that failed each only")
        self.stdout.write(f"Replay plan: {plan.count} record(s) of {plan.source} to {target}.")
        if plan.targets:
            self.table(["TARGET-TOPIC", "PARTITION", "RECORDS"], [[t.topic, t.partition, n] for t, n in plan.targets])
        self.stdout.write(f"First {len(plan.sample)} record(s):")
        self.table(
            ["SOURCE", "TARGET", "KEY", "BYTES", "VALUE"],
            [
                [f"{plan.source}-{r.partition}@{r.offset}", r.target or "(cannot replay)", _text(r.key), r.size,
                 _text(r.preview, 40)]
                for r in plan.sample
            ],
        )
        if plan.invalid_count:
            self.stdout.write(f"Cannot be replayed: {plan.invalid_count} record(s):")
            self.table(
                ["SOURCE", "PROBLEM"],
                [[f"{plan.source}-{r.partition}@{r.offset}", r.problem] for r in plan.invalid[:20]],
            )
            if plan.invalid_count > 20:
                self.stdout.write(f"... and {plan.invalid_count - 20} more")

    @staticmethod
    def _targets(plan):
        by_topic = {}
        for target, count in plan.targets:
            by_topic[target.topic] = by_topic.get(target.topic, 0) + count
        where = ", ".join(f"{name} ({count})" for name, count in by_topic.items()) or "nowhere"
        if plan.to_topic is None:
            where += ", for every group" if plan.all_groups else ", for the group that failed each"
        return where

    @staticmethod
    def _last(plan, last):
        return ", ".join(f"{plan.source}-{p}@{o}" for p, o in sorted(last)) or "none"

    def _resume(self, plan, last):
        """Say how to continue a replay that ended early, from the offsets after the last ones handled."""
        if self.single:
            done = {(p, o) for p, o in last.items()}
            left = [f"--offset {p}:{s}" for p, s, _ in plan.ranges if not any(d[0] == p and d[1] >= s for d in done)]
            return f"To continue, re-run with {' '.join(left)}." if left else "Every selected record was handled."
        steps = []
        for partition, start, end in plan.ranges:
            done = last.get(partition)
            if done is None:
                steps.append(f"--partition {partition} --from-offset {start}")
            elif done + 1 < end:
                steps.append(f"--partition {partition} --from-offset {done + 1}")
        if not steps:
            return "Every selected offset was handled."
        return "To continue, re-run with " + "; then with ".join(steps) + " (other options unchanged)."

    @staticmethod
    def _bounds(source):
        _, parts = topics.describe_topic(source)
        described = [
            f"partition {p.partition} holds offsets {p.log_start_offset} to {p.log_end_offset - 1}"
            if p.log_end_offset > p.log_start_offset else f"partition {p.partition} is empty"
            for p in parts
        ]
        return "Its " + "; ".join(described) + "."


def _text(data, width=20):
    if data is None:
        return None
    text = data.decode("utf-8", errors="replace").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"
