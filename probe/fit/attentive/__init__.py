"""The attentive probe: learned queries cross-attending to a store's frozen tokens, then a linear
head (`model`), trained for every seed, fold and weight decay of a budget as one batched model
(`training`: AdamW, its precision and threads), under the protocol of the linear probes (`plan`:
folds, the choice of weight decay; `probe`: reading the tokens, in memory or streamed, and
scoring the test split).

Imports numpy, torch (inside functions) and `medprobe.probe.fit.protocol`; reads tokens only
through a `TokenSource` it is handed, never a store.
"""

from medprobe.probe.fit.attentive.plan import ArrayTokens
from medprobe.probe.fit.attentive.probe import attentive_scores
from medprobe.probe.fit.protocol import TokenSource

__all__ = ["ArrayTokens", "TokenSource", "attentive_scores"]
