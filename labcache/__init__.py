"""labcache: advanced caching patterns with Redis, in Python."""
