"""A run's state in Redis: keys, the state machine, the one transition write path, leases, arq jobs.

Loaded by every process that reads or writes runs (API, worker, CLI admin commands).
"""
