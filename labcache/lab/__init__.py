"""The course around the library: what the notebooks need and a service using labcache does not.

- `data`: the lab's insurance database (SQLite from seeded CSVs, simulated latency, call counts);
  its tables are `schema`, and `generator` writes the seeded CSVs.
- `workload`: the lab's traffic against a cache, open loop, on a virtual clock if asked; the
  seeded request mix it draws from is `stream`.
- `display`, `widgets`: the notebooks' colours, source views, live dashboard and sliders.
- `rules`, `plans`: the lab's invalidation rules and warm plans, for the library's
  `Invalidator` and `CacheWarmer`.
- `local_cluster`: a real Redis Cluster on this machine (`cluster_nodes` reads its nodes);
  `failover`: the drill that kills a primary mid-workload.
- `expiry_drill`: readers arriving around an expiry on a hand-moved clock (notebook 06).
- `writes`: write-through and write-behind with the course's verbs (`update_policy`,
  `update_customer`) and keys; `flush`: the write-behind flusher as its own process.
- `student`: each student's own key prefix on a shared Redis, and the ACL rules that fence it.
- `exercises`: the `@exercise` stub marker; `LABCACHE_SOLUTIONS=1` swaps in `solutions/`;
  `checks/` holds what the self-check cells need.

Most of it needs the course extra (`pip install 'labcache[lab]'`).
"""
