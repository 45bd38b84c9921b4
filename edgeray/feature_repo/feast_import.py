"""Import Feast without torch. Feast imports torch when it is installed (feast.torch_wrapper), only for
`OnlineResponse.to_tensor` and its RAG retriever, which edgeray never calls; that costs ~2 s of CPU in every
process that opens the feature store (the feature streamer, each API replica, the CLI), and on a 2-core box those
starts queue behind each other. Importing this module first imports Feast with torch hidden, then unhides it, so
later `import torch` in the same process works as usual (Feast alone keeps TORCH_AVAILABLE = False)."""
from __future__ import annotations

import sys


def import_feast_without_torch() -> None:
    if "feast" in sys.modules or "torch" in sys.modules:
        return  # already imported, or torch is here anyway: nothing to save
    sys.modules["torch"] = None  # type: ignore[assignment]  # `import torch` now raises ImportError
    try:
        import feast  # noqa: F401
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


import_feast_without_torch()
