"""The course's answers to the notebooks' exercises, one module per notebook (`nb01` ... `nb08`).

A student's notebook never imports these; `@exercise(part)` does when `LABCACHE_SOLUTIONS=1`.
Each function has the stub's name and signature.
"""
