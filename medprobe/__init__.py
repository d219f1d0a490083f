"""medprobe: a resumable embedding cache of frozen vision models and fast probes over it.

The three stages install as `medprobe.extract`, `medprobe.cache` and `medprobe.probe`; their
folders sit at the top of the checkout.
"""
