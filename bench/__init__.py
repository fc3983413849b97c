"""`make bench`: measures a real `logd serve` process under load from bench/sender.c.

run.py drives the measurements (ingest.py, query.py, tail.py, logger_cost.py) and
report.py prints the table; procs.py starts, pins, watches and stops processes.
"""
