"""Everything that imports ray: the pool (pool.py) and the Jobs client (jobs.py).

Ray Train (distribution inside a trial) and Ray Data (tokenizing at scale) belong here too.
"""
