"""The project's ``trainer`` package, not Coqui's: two installed packages share that top-level name.

coqui-tts-trainer (the ``coqui`` extra) installs a package called ``trainer`` in site-packages. An
editable install of this project is found through a finder that Python asks only after site-packages,
so a process started outside the repository (a user's script that imports ``studies``, a long-run
worker ``python -m studies.execution.pool`` started from another folder) would import Coqui's
``trainer`` and fail on the first ``from trainer.config import ...``. Inside the repository the
script's folder or the current folder comes first on ``sys.path`` and the project's wins already.

``claim()`` runs when ``studies`` is imported (every such process imports it before ``trainer``): when
``trainer`` would resolve to another package, it puts this checkout first on ``sys.path``. It cannot
help a process that imported Coqui's ``trainer`` first; that is one line (ImportError). Coqui itself
runs in a process of its own (``examples/coqui/coqui_runner.py``, ``python -I``).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OURS = ROOT / "trainer" / "__init__.py"


def _origin(module: object) -> Path | None:
    path = getattr(module, "__file__", None)
    return Path(path).resolve() if path else None


def claim() -> None:
    """Make ``import trainer`` find this project's package (see the module's docstring)."""
    loaded = sys.modules.get("trainer")
    if loaded is not None:
        if _origin(loaded) != OURS:
            raise ImportError(
                f"the package `trainer` in this process is {_origin(loaded)}, not this project's "
                f"({OURS.parent}): coqui-tts-trainer's has the same name; import the project first, or run "
                "Coqui in a process of its own (examples/coqui/coqui_runner.py)"
            )
        return
    spec = importlib.util.find_spec("trainer")
    if spec is not None and spec.origin is not None and Path(spec.origin).resolve() == OURS:
        return
    sys.path.insert(0, str(ROOT))
    importlib.invalidate_caches()
