"""The course around the library: what the notebooks need and a service using labcache does not.

- `student`: each student's own key prefix on a shared Redis, and the ACL rules that fence it.
- `exercises`: the `@exercise` stub marker; `LABCACHE_SOLUTIONS=1` swaps in `solutions/`.
"""
