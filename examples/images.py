"""Images: the packages a function needs, installed once and cached by content.

    ketch run examples/images.py

The first run builds the image (its log streams to the terminal); later runs and deploys
of the same image reuse it.
"""

import ketch

image = ketch.Image.debian_slim().pip_install("six").env({"DEMO_MODE": "images"})
app = ketch.App("images", image=image)


@app.function()
def six_version() -> str:
    import os

    import six  # installed in the image, not needed on this machine

    return f"six {six.__version__} (DEMO_MODE={os.environ['DEMO_MODE']})"


@app.local_entrypoint()
def main() -> None:
    print(six_version.remote())
