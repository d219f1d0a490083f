"""Which datasets a user has: a small TOML file mapping dataset name to folder and options.

```toml
# datasets.toml
[isic2019]
path = "/data/ISIC_2019"

[chexpert]
path = "/data/CheXpert-v1.0-small"
uncertain = "ones"          # any adapter option
```
Without a file, every registered dataset is looked for at `data/<name>`.
"""

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medprobe.cache.errors import ToolkitError

DATA_CONFIG_ENV = "MEDPROBE_DATA_CONFIG"
DEFAULT_DATA_CONFIG = "datasets.toml"


@dataclass(frozen=True)
class ConfiguredDataset:
    name: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)


def load_data_config(config_path: Path | None, known: list[str]) -> list[ConfiguredDataset]:
    """The datasets named in the config file, or `data/<name>` for each of `known` without one."""
    from_env = os.environ.get(DATA_CONFIG_ENV)
    path = Path(config_path or from_env or DEFAULT_DATA_CONFIG)
    if not path.is_file():
        if config_path is not None:
            raise ToolkitError(f"--config {config_path}: no such file")
        if from_env:  # named on purpose: falling back to data/<name> would hide the typo
            raise ToolkitError(
                f"${DATA_CONFIG_ENV}={from_env!r}: no such file; fix the path, or unset "
                f"{DATA_CONFIG_ENV} to look for ./{DEFAULT_DATA_CONFIG} and data/<name>"
            )
        return [ConfiguredDataset(name, Path("data") / name) for name in known]
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ToolkitError(f"{path}: not valid TOML ({error})") from error
    configured = []
    for name, entry in table.items():
        if name not in known:
            raise ToolkitError(f"{path}: unknown dataset [{name}]; known: {', '.join(known)}")
        if not isinstance(entry, dict):
            raise ToolkitError(f'{path}: [{name}] must be a table with at least path = "..."')
        options = dict(entry)
        folder = Path(options.pop("path", Path("data") / name)).expanduser()
        if not folder.is_absolute():
            folder = path.parent / folder
        configured.append(ConfiguredDataset(name, folder, options))
    return configured
