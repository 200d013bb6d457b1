"""`Image.imports()` (tests/integration/test_everyday_api.py): a package missing here is
tolerated while the module is imported locally, and is an error in the container."""

from __future__ import annotations

import ketch

app = ketch.App("everyday-imports")
image = ketch.Image.debian_slim()

with image.imports():
    import ketch_everyday_not_installed_anywhere  # type: ignore[import-not-found]  # noqa: F401


@app.function(image=image)
def ran() -> str:
    return "ran"
