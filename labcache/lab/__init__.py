"""The course around the library: what the notebooks need and a service using labcache does not.

- `data`: the lab's insurance database (SQLite from seeded CSVs, simulated latency, call counts);
  its tables are `schema`, and `generator` writes the seeded CSVs.
- `workload`: the lab's traffic against a cache, open loop, on a virtual clock if asked; the
  seeded request mix it draws from is `stream`.
- `display`, `widgets`: the notebooks' colours, source views, live dashboard and sliders.
- What one notebook's experiment needs, out of its cells: `ttl_replay` (02's TTL slider),
  `outside_writes` (03: writes through `redis-cli`, not labcache), `cache_view` (04: what an
  invalidation dropped, and the commands it sent), `ping_stall` (02 and 04: a second client's
  PINGs while `KEYS` runs), `fleet` and `hot_key` (06: processes sharing one cold key, one hot
  key across expiries), `write_timing` (07: read-after-write and the write-behind lag),
  `failover_figure` (08's live failover figure).
- `rules`, `plans`: the lab's invalidation rules and warm plans, for the library's
  `Invalidator` and `CacheWarmer`.
- `local_cluster`: a real Redis Cluster on this machine (`cluster_nodes` reads its nodes);
  `failover`: the drill that kills a primary mid-workload.
- `expiry_drill`: readers arriving around an expiry on a hand-moved clock (notebook 06).
- `writes`: write-through and write-behind with the course's verbs (`update_policy`,
  `update_customer`) and keys; `flush`: the write-behind flusher as its own process.
- `student`: each student's own key prefix on a shared Redis, the ACL rules that fence it, and
  `child_url` for a process the notebook starts as the same user.
- `exercises`: the `@exercise` stub marker; `LABCACHE_SOLUTIONS=1` swaps in `solutions/`;
  `checks/` holds what the self-check cells need.

Most of it needs the course extra (`pip install 'labcache[lab]'`).
"""
