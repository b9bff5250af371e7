"""Everything that imports ray: the pool (pool.py), the Jobs client (jobs.py), Ray Train (ddp.py: a
trial on N data-parallel workers, which the pool runs for a Task with workers > 1) and Ray Data
(tokenize.py: `tiedsweep tokenize`).
"""
