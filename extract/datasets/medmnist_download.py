"""Fetch a MedMNIST+ npz where the machine is online: the URL and MD5 come from the `medmnist`
package's INFO (the authors' own table of Zenodo files), the transfer from torchvision's
`download_url`, which follows Zenodo's redirects and checks the MD5.

The file is downloaded into a temporary folder beside its destination and moved into place only
once its MD5 matched, so an interrupted or corrupted download never looks like a dataset.
"""

import shutil
import tempfile
from pathlib import Path

from medprobe.cache.errors import ToolkitError
from medprobe.extract.offline import is_offline

SIZES = (28, 64, 128, 224)


def medmnist_file_name(flag: str, size: int) -> str:
    """The official name: `<flag>.npz` at 28 px, `<flag>_<size>.npz` at the MedMNIST+ sizes."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def download_medmnist(flag: str, size: int, folder: Path) -> Path:
    """`folder/<flag>[_<size>].npz`, downloaded unless it is there already."""
    if size not in SIZES:
        raise ToolkitError(f"medmnist: size={size} does not exist; sizes are {SIZES}")
    target = folder / medmnist_file_name(flag, size)
    if target.is_file():
        return target
    try:
        import medmnist
    except ImportError as error:
        raise ToolkitError(
            "medmnist: download=true needs the medmnist package (pip install "
            "'medprobe[medmnist]'), or fetch the npz from https://zenodo.org/records/10519652 "
            f"and put it at {target}"
        ) from error
    if flag not in medmnist.INFO:
        raise ToolkitError(f"medmnist: the medmnist package does not know the subset {flag!r}")
    suffix = "" if size == 28 else f"_{size}"
    url, md5 = medmnist.INFO[flag][f"url{suffix}"], medmnist.INFO[flag][f"MD5{suffix}"]
    by_hand = f"download {url} (MD5 {md5}) and put it at {target}"
    if is_offline():
        raise ToolkitError(f"medmnist: {target} is missing and HF_HUB_OFFLINE is set; {by_hand}")

    from torchvision.datasets.utils import download_url

    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=folder))
    try:
        download_url(url, str(staging), filename=target.name, md5=md5)
        (staging / target.name).replace(target)
    except OSError as error:  # URLError, HTTPError, disk full
        raise ToolkitError(
            f"medmnist: downloading {url} failed ({' '.join(str(error).split())[:200]}); {by_hand}"
        ) from error
    except RuntimeError as error:  # torchvision's integrity check
        raise ToolkitError(
            f"medmnist: the file downloaded from {url} does not have the MD5 the medmnist "
            f"package lists (discarded); {by_hand}"
        ) from error
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
