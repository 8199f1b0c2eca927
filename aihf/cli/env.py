"""``aihf env``: the versions a bug report needs, one ``name  version`` line each."""

from __future__ import annotations

import platform
from importlib import metadata

from ..errors import ConfigError

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "trl", "datasets", "tokenizers", "safetensors", "deepspeed")


def versions() -> dict[str, str]:
    """aihf, python, platform, each library in :data:`LIBRARIES` ("not installed" if absent) and the accelerator."""
    from .. import __version__

    found = {"aihf": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    import torch

    if torch.cuda.is_available():
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        found["accelerator"] = f"{torch.cuda.device_count()} x {', '.join(names)} (CUDA {torch.version.cuda})"
    else:
        found["accelerator"] = "none (CPU only)"
    return found


def run(argv: list[str]) -> int:
    if argv and argv[0] in ("-h", "--help"):
        print("usage: aihf env\n\nPrint the versions of aihf, python, the platform and the libraries aihf runs on.")
        return 0
    if argv:
        raise ConfigError(f"takes no arguments, got {' '.join(argv)}")
    for name, version in versions().items():
        print(f"{name:<13} {version}")
    return 0
