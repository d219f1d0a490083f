"""One extraction on many GPUs: `--shard i/n` slices and the streaming join of their stores
(`shards`), and `extract submit`, which runs the slices as jobs of a cluster's own scheduler
through submitit (`submit`).
"""
