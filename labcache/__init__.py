"""labcache: advanced caching patterns with Redis, in Python.

The pieces, one module per concept: `connection` (which Redis), `aside` (cache-aside),
`multilevel` (memory + Redis), composed of `memory` (L1), `store` (L2: every Redis read and
write), `loading` (misses, refreshes, fallbacks) and `sync` (keeping every L1 coherent through
`backplane` or `tracking`, both on `listener`), with the options that carry behaviour in
`policies` (`Stampede`, `Staleness`, `Guard`); `warming`, `invalidation`, `generations`,
`stampede` and `lock`, `ttl`, `writes` and `flusher`, `monitor` with `latency` and `advice`,
`breaker` (Redis down or slow), `cluster` (Redis Cluster), `stats` (one shape for every stats
object), `validate` (option values), `errors` (`LabcacheError`, the base of them all). They
need only redis-py, cachetools and python-dotenv. The course around them — the insurance
database, workloads, widgets, a local cluster, the lab's rules and warm plans, exercises — is
`labcache.lab`.
"""

import logging

from labcache.aside import CacheAside
from labcache.connection import Settings, connect, health_check
from labcache.multilevel import MultiLevelCache

# A library logs; the application decides where logs go. Without this, warnings would be
# printed to stderr by Python's last-resort handler, e.g. into a notebook's output.
logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["CacheAside", "MultiLevelCache", "Settings", "connect", "health_check"]
__version__ = "0.1.0"
