-- One page of a listing (a `page_*` query of queries.sql), by keyset: Store._page fills
-- the braces from fixed lists in store.py, never from a client.
--
-- `listed` is the listing: every row its filters let through. A page is found in one of
-- four ways, and only that way's scans run (each is gated by a one-time filter on `way`):
--   head  page[number] in the first half: the page's first row is sought from the start
--         of the sort's index, skipping the rows of the pages before it (index-only);
--   tail  page[number] in the second half: its last row is sought from the end, so the
--         last page costs what the first does;
--   from  a `next` link's cursor names the page's first row;
--   to    a `prev` link's cursor names the page's last row.
-- From that anchor the page is one index range scan. One more row than the page is read
-- beyond it, and one row on its other side, to make the `next` and `prev` cursors.
-- Parameters after the listing's own: {size} page size, {number} page number, {how}
-- 'from'/'to' or NULL, {k1} and {k2} the cursor's sort key and id.
WITH listed AS NOT MATERIALIZED (
{listing}
), way AS MATERIALIZED (
    SELECT n,
           coalesce({how}, CASE WHEN ({number} - 1) * {size} * 2 < n THEN 'head'
                                ELSE 'tail' END) AS how,
           CASE WHEN ({number} - 1) * {size} * 2 < n THEN ({number} - 1) * {size}
                ELSE greatest(n - {number} * {size}, 0) END AS skip,
           -- the last page may be short; a page past the end is empty
           CASE WHEN {how} IS NULL AND ({number} - 1) * {size} * 2 >= n
                THEN greatest(least({size}, n - ({number} - 1) * {size}), 0)
                ELSE {size} END AS rows
    FROM (SELECT count(*) AS n FROM listed) AS total
), anchor AS MATERIALIZED (
    (SELECT {key} AS k, id AS i FROM listed WHERE (SELECT how = 'head' FROM way)
     ORDER BY {forward} OFFSET (SELECT skip FROM way) LIMIT 1)
    UNION ALL
    (SELECT {key}, id FROM listed WHERE (SELECT how = 'tail' FROM way)
     ORDER BY {backward} OFFSET (SELECT skip FROM way) LIMIT 1)
    UNION ALL
    SELECT {k1}::text::{type}, {k2}::bigint WHERE {how} IS NOT NULL
), ahead AS (
    SELECT * FROM listed WHERE (SELECT how IN ('head', 'from') FROM way)
      AND ({key}, id) {at_or_after} ((SELECT k FROM anchor), (SELECT i FROM anchor))
    ORDER BY {forward} LIMIT (SELECT rows FROM way) + 1
), behind AS (
    SELECT * FROM listed WHERE (SELECT how IN ('tail', 'to') FROM way)
      AND ({key}, id) {at_or_before} ((SELECT k FROM anchor), (SELECT i FROM anchor))
    ORDER BY {backward} LIMIT (SELECT rows FROM way) + 1
), before_ahead AS (
    SELECT * FROM listed WHERE (SELECT how IN ('head', 'from') FROM way)
      AND ({key}, id) {before} ((SELECT k FROM anchor), (SELECT i FROM anchor))
    ORDER BY {backward} LIMIT 1
), after_behind AS (
    SELECT * FROM listed WHERE (SELECT how IN ('tail', 'to') FROM way)
      AND ({key}, id) {after} ((SELECT k FROM anchor), (SELECT i FROM anchor))
    ORDER BY {forward} LIMIT 1
)
-- `page_part`: 'ahead' rows in the sort's order, 'behind' rows against it (page_pos
-- numbers each); 'before' and 'after' the rows on the page's other side
SELECT w.n AS page_total, w.rows AS page_rows, p.*
FROM way w LEFT JOIN (
    SELECT 'ahead' AS page_part, row_number() OVER (ORDER BY {forward}) AS page_pos, *
    FROM ahead
    UNION ALL
    SELECT 'behind', row_number() OVER (ORDER BY {backward}), * FROM behind
    UNION ALL
    SELECT 'before', 1, * FROM before_ahead
    UNION ALL
    SELECT 'after', 1, * FROM after_behind
) AS p ON true
