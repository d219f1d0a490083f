"""Files on disk, safely: where the cache root is (`root`), where a store and its companions
live under it (`paths`), free space and OS errors as one line (`disk`), and publishing a file
or folder whole or not at all (`atomic`).

Knows nothing of HDF5 or stores' contents; every other part of the toolkit writes through it.
"""
