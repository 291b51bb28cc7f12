"""`python -m labcache.bench [--quick] [--url URL] [--only 1,2,8]`."""

from labcache.bench.cli import main

raise SystemExit(main())
