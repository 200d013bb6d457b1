"""Two functions sharing one volume, for tests/integration/test_volume.py."""

import os
from typing import Any

import ketch

# Under /tmp so that the (empty) mount point the backend creates on the host is out of the
# way; the test checks that nothing written in the container lands there on the host.
MOUNT = "/tmp/ketch-volume-test/data"

vol = ketch.Volume.from_name("shared-files", create_if_missing=True)
app = ketch.App("volumes-app")


@app.function(volumes={MOUNT: vol})
def write(name: str, text: str) -> dict[str, object]:
    path = os.path.join(MOUNT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(text)
    vol.commit()
    return {
        "pid": os.getpid(),
        "mode": os.environ.get("KETCH_VOLUME_MODE"),
        "container": os.environ.get("KETCH_CONTAINER_ID"),
    }


@app.function(volumes={MOUNT: vol})
def read(name: str) -> dict[str, Any]:
    vol.reload()
    with open(os.path.join(MOUNT, name)) as fh:
        text = fh.read()
    return {
        "text": text,
        "container": os.environ.get("KETCH_CONTAINER_ID"),
        "listing": sorted(e.path for e in vol.listdir("/", recursive=True)),
    }


missing = ketch.App("volumes-missing")


@missing.function(volumes={"/tmp/ketch-volume-test/none": ketch.Volume.from_name("no-such-vol")})
def nothing() -> None:
    pass


fragile_vol = ketch.Volume.from_name("fragile-files", create_if_missing=True)
fragile = ketch.App("volumes-fragile")


# A fresh container per input, so that each call shows what a starting container finds.
@fragile.function(
    volumes={"/tmp/ketch-volume-test/fragile": fragile_vol}, single_use_containers=True
)
def peek() -> list[str]:
    return sorted(os.listdir("/tmp/ketch-volume-test/fragile"))


# For the path-mapping fallback (a symlink at the mount path): a path of its own.
LINKED = "/tmp/ketch-volume-test/linked"
linked = ketch.App("volumes-linked")


@linked.function(volumes={LINKED: ketch.Volume.from_name("linked-files", create_if_missing=True)})
def linked_write(text: str) -> dict[str, object]:
    with open(os.path.join(LINKED, "note.txt"), "w") as fh:
        fh.write(text)
    return {"mode": os.environ.get("KETCH_VOLUME_MODE"), "link": os.path.islink(LINKED)}
