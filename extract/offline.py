"""The toolkit's one offline switch: HF_HUB_OFFLINE.

huggingface_hub (and through it timm, transformers and open_clip) already obeys it; our own
downloads (VMamba's GitHub release assets, MedMNIST's Zenodo files) obey it too, so one variable
stops every network access and turns it into an error naming the file to fetch by hand.
"""

import os


def is_offline() -> bool:
    """huggingface_hub's reading of HF_HUB_OFFLINE."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
