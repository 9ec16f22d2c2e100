-- Throttle counts shared by every web process: one row per (scope, ident, fixed window). Each
-- section is run by the storage function of the same name in api/storage.py.

-- name: count_request --
-- Count one request in the current window of `window_s` seconds and return the window's count and
-- the seconds until it ends. One statement: concurrent requests from any process serialise on the
-- row's lock for the instant of the update, so no two read the same count. Windows are aligned to
-- the epoch, so every process agrees where one starts.
INSERT INTO api_throttlecount AS c (scope, ident, window_start, hits, expires_at)
SELECT %(scope)s, %(ident)s, w.start, 1, w.start + make_interval(secs => %(window_s)s)
  FROM (SELECT to_timestamp(floor(extract(epoch FROM now()) / %(window_s)s) * %(window_s)s) AS start) w
ON CONFLICT (scope, ident, window_start) DO UPDATE SET hits = c.hits + 1
RETURNING c.hits, extract(epoch FROM c.expires_at - now())

-- name: prune_counts --
-- Delete up to `limit` ended windows (the expires_at index finds them). SKIP LOCKED: two processes
-- pruning at once take different rows instead of waiting on each other.
DELETE FROM api_throttlecount
 WHERE (scope, ident, window_start) IN (SELECT scope, ident, window_start FROM api_throttlecount
                                         WHERE expires_at < now()
                                         LIMIT %(limit)s
                                           FOR UPDATE SKIP LOCKED)
