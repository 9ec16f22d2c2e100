-- sluice_share_poll, version 2, installed by migration 0008 (version 1, in share_v1.sql, is its
-- reverse): an acquisition on a partition with nothing to acquire returns before it locks or writes.

-- One round trip of a share-group member on one partition: accept what it finished, then acquire
-- up to p_limit records. Returns rows of four kinds:
--   1 a record delivered to the member (with its delivery count),
--   2 a record past the delivery limit, left in place for the caller to dead-letter,
--   3 an accepted offset that was refused (the member no longer held it),
--   4 a record whose lock had expired, now delivered again (previous_member says who held it).
-- Acceptance does not need the share partition's lock; acquisition takes it with SKIP LOCKED, so a
-- member never queues behind another one acquiring on the same partition.
CREATE OR REPLACE FUNCTION sluice_share_poll(
    p_group bigint, p_topic bigint, p_partition int, p_member text,
    p_limit int, p_lock_ms int, p_delivery_limit int,
    p_accept bigint[], p_accept_counts int[]
) RETURNS TABLE (
    kind smallint, record_offset bigint, delivery_count int, previous_member text,
    key bytea, value bytea, value_format smallint, headers jsonb, record_timestamp timestamptz
) LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_covered bigint[];
    v_done bigint[] := '{}';
    v_sp_id bigint;
    v_acquire bigint;
    v_log_start bigint;
    v_log_end bigint;
    v_last bigint;
    v_total int := 0;
    v_firsts bigint[] := '{}';
    v_lasts bigint[] := '{}';
    v_counts int[] := '{}';
    v_kinds smallint[] := '{}';
    v_lock timestamptz := now() + p_lock_ms * interval '1 millisecond';
BEGIN
    -- Accept. The delivery count is the fencing token: a range re-acquired since (by anyone) has a
    -- higher count, so a late acceptance finds nothing and is refused.
    IF cardinality(p_accept) > 0 THEN
        FOR r IN
            SELECT d."offset" AS first, d.last_offset AS last, d.delivery_count AS cnt, d.lock_until, d.available_at
              FROM queueing_sharedelivery d
             WHERE d.group_id = p_group AND d.topic_id = p_topic AND d.partition = p_partition
               AND d.state = 1 AND d.member_id = p_member
               AND d."offset" <= (SELECT max(o) FROM unnest(p_accept) o)
               AND d.last_offset >= (SELECT min(o) FROM unnest(p_accept) o)
             ORDER BY d."offset"
               FOR UPDATE
        LOOP
            SELECT array_agg(a.o) INTO v_covered
              FROM unnest(p_accept, p_accept_counts) AS a(o, c)
             WHERE a.o BETWEEN r.first AND r.last AND a.c = r.cnt;
            CONTINUE WHEN v_covered IS NULL;
            DELETE FROM queueing_sharedelivery
             WHERE group_id = p_group AND topic_id = p_topic AND partition = p_partition AND "offset" = r.first;
            IF cardinality(v_covered) < r.last - r.first + 1 THEN
                -- Part of the range was accepted: the rest stays held, record by record.
                INSERT INTO queueing_sharedelivery
                       (group_id, topic_id, partition, "offset", last_offset, state, delivery_count, member_id,
                        lock_until, available_at)
                SELECT p_group, p_topic, p_partition, o, o, 1, r.cnt, p_member, r.lock_until, r.available_at
                  FROM generate_series(r.first, r.last) AS o
                 WHERE o <> ALL (v_covered);
            END IF;
            v_done := v_done || v_covered;
        END LOOP;
        RETURN QUERY
            SELECT 3::smallint, a.o, NULL::int, NULL::text, NULL::bytea, NULL::bytea, NULL::smallint,
                   NULL::jsonb, NULL::timestamptz
              FROM unnest(p_accept) AS a(o)
             WHERE a.o <> ALL (v_done);
    END IF;
    IF p_limit <= 0 THEN
        RETURN;
    END IF;

    -- Nothing to acquire and the window's start up to date: return without a lock or a write, so
    -- that a poll of an idle partition is a read (no row version, no WAL, no transaction id).
    IF cardinality(p_accept) = 0 AND EXISTS (
        SELECT FROM queueing_sharepartition sp
          JOIN queueing_partition p ON p.topic_id = sp.topic_id AND p.number = sp.partition
         WHERE sp.group_id = p_group AND sp.topic_id = p_topic AND sp.partition = p_partition
           AND sp.acquire_offset >= p.next_offset AND sp.acquire_offset >= p.log_start_offset
           AND sp.start_offset = coalesce(
               (SELECT min(d."offset") FROM queueing_sharedelivery d
                 WHERE d.group_id = p_group AND d.topic_id = p_topic AND d.partition = p_partition),
               sp.acquire_offset)
           AND NOT EXISTS (
               SELECT FROM queueing_sharedelivery d
                WHERE d.group_id = p_group AND d.topic_id = p_topic AND d.partition = p_partition
                  AND ((d.state = 2 AND d.available_at <= now()) OR (d.state = 1 AND d.lock_until < now())))
    ) THEN
        RETURN;
    END IF;

    -- Acquire, under the share partition's lock.
    SELECT sp.id, sp.acquire_offset, p.log_start_offset, p.next_offset
      INTO v_sp_id, v_acquire, v_log_start, v_log_end
      FROM queueing_sharepartition sp
      JOIN queueing_partition p ON p.topic_id = sp.topic_id AND p.number = sp.partition
     WHERE sp.group_id = p_group AND sp.topic_id = p_topic AND sp.partition = p_partition
       FOR UPDATE OF sp SKIP LOCKED;
    IF v_sp_id IS NULL THEN
        RETURN;
    END IF;
    IF v_acquire < v_log_start THEN
        -- Retention removed records this group never finished: the window restarts at the log start.
        DELETE FROM queueing_sharedelivery
         WHERE group_id = p_group AND topic_id = p_topic AND partition = p_partition AND last_offset < v_log_start;
        v_acquire := v_log_start;
        UPDATE queueing_sharepartition SET acquire_offset = v_log_start WHERE id = v_sp_id;
    END IF;

    -- Records released and due, or held past their lock. SKIP LOCKED passes over rows an
    -- acknowledgement is changing right now.
    FOR r IN
        SELECT d."offset" AS first, d.last_offset AS last, d.state, d.delivery_count AS cnt, d.member_id
          FROM queueing_sharedelivery d
         WHERE d.group_id = p_group AND d.topic_id = p_topic AND d.partition = p_partition
           AND ((d.state = 2 AND d.available_at <= now()) OR (d.state = 1 AND d.lock_until < now()))
         ORDER BY d."offset"
         LIMIT p_limit
           FOR UPDATE SKIP LOCKED
    LOOP
        EXIT WHEN v_total >= p_limit;
        IF r.cnt >= p_delivery_limit THEN
            v_firsts := v_firsts || r.first; v_lasts := v_lasts || r.last;
            v_counts := v_counts || r.cnt; v_kinds := v_kinds || 2::smallint;
            CONTINUE;
        END IF;
        IF r.state = 1 THEN
            RETURN QUERY
                SELECT 4::smallint, o, r.cnt, r.member_id::text, NULL::bytea, NULL::bytea, NULL::smallint,
                       NULL::jsonb, NULL::timestamptz
                  FROM generate_series(r.first, r.last) AS o;
        END IF;
        UPDATE queueing_sharedelivery
           SET state = 1, delivery_count = r.cnt + 1, member_id = p_member, lock_until = v_lock
         WHERE group_id = p_group AND topic_id = p_topic AND partition = p_partition AND "offset" = r.first;
        v_firsts := v_firsts || r.first; v_lasts := v_lasts || r.last;
        v_counts := v_counts || (r.cnt + 1); v_kinds := v_kinds || 1::smallint;
        v_total := v_total + (r.last - r.first + 1)::int;
    END LOOP;

    -- Records never delivered: one row for the whole new range.
    IF v_total < p_limit AND v_acquire < v_log_end THEN
        v_last := least(v_log_end, v_acquire + (p_limit - v_total)) - 1;
        INSERT INTO queueing_sharedelivery
               (group_id, topic_id, partition, "offset", last_offset, state, delivery_count, member_id,
                lock_until, available_at)
        VALUES (p_group, p_topic, p_partition, v_acquire, v_last, 1, 1, p_member, v_lock, now());
        v_firsts := v_firsts || v_acquire; v_lasts := v_lasts || v_last;
        v_counts := v_counts || 1; v_kinds := v_kinds || 1::smallint;
        v_acquire := v_last + 1;
    END IF;

    -- The window starts at its first unfinished record.
    UPDATE queueing_sharepartition sp
       SET acquire_offset = v_acquire,
           start_offset = coalesce(
               (SELECT min(d."offset") FROM queueing_sharedelivery d
                 WHERE d.group_id = p_group AND d.topic_id = p_topic AND d.partition = p_partition),
               v_acquire)
     WHERE sp.id = v_sp_id;

    -- One primary-key range scan per range. (A single join of the ranges with the records gets a
    -- generic plan, after five calls, that filters the whole partition.)
    FOR i IN 1 .. coalesce(cardinality(v_firsts), 0) LOOP
        RETURN QUERY
            SELECT v_kinds[i], lr."offset", v_counts[i], NULL::text, lr.key, lr.value, lr.value_format,
                   lr.headers, lr.timestamp
              FROM queueing_record lr
             WHERE lr.topic_id = p_topic AND lr.partition = p_partition
               AND lr."offset" BETWEEN v_firsts[i] AND v_lasts[i]
             ORDER BY lr."offset";
    END LOOP;
END;
$$;
