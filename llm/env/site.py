"""Site settings: what this machine's pip and network need, read at run time, never baked.

The index, extra indexes, find-links and CA bundle come from the host's own pip configuration
(pip reads them itself: pip.conf, PIP_* variables, and the proxies of its environment); npubox only adds
the user's wheelhouse. Nothing here is written into an image, a label or a commit.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Site:
    wheelhouse: list[Path] = field(default_factory=list)  # extra folders of local wheels (find-links)

    def pip_find_links_args(self) -> list[str]:
        args: list[str] = []
        for d in self.wheelhouse:
            args += ["--find-links", str(d)]
        return args

    @staticmethod
    def pip() -> list[str]:
        """The host's pip, with the host's configuration (index, find-links, cert)."""
        return [sys.executable, "-m", "pip"]


def cache_dir() -> Path:
    root = os.environ.get("NPUBOX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "npubox"
    )
    return Path(root)
