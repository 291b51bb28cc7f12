"""The benchmark: labcache against the physical limits and the peer libraries, in one run.

`python -m labcache.bench` (or `make bench`) starts a private redis-server on a free loopback
port (`--url` to use another), runs every scenario against it in one process, interleaving the
contenders in round-robin rounds, and prints a table (median, p99, ops/s, the ratio to each
scenario's reference row, target, met/missed) plus the behavioural checks (counts of commands,
loader calls, entries: never timings); the same rows go to `bench-results/` as JSON and CSV.
`--quick` runs every scenario small; `--only 1,2,8` picks scenarios; `--profile l1|l2|miss|warm`
prints where labcache spends its time on one path. The exit code is 1 only if a check failed
(something is functionally broken), never because of a time.
"""

from labcache.bench.cli import SCENARIOS, Config, main, run
from labcache.bench.core import Check, Plan, Row
from labcache.bench.report import Report

__all__ = ["SCENARIOS", "Check", "Config", "Plan", "Report", "Row", "main", "run"]
