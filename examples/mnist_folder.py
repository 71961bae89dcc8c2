"""Write MNIST's 10k test images as an image folder, the layout most users' own data has.

    python examples/mnist_folder.py --data-root ../shared/data --out /tmp/mnist_folder

gives ``OUT/train/<digit>/<n>.png`` (the first 8000 images) and ``OUT/test/<digit>/<n>.png``
(the last 2000): 1-channel, 28-pixel PNGs. Then compress on it like on any folder of your own:

    n2n-fx compress --dataset imagefolder:/tmp/mnist_folder --model conv4
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from n2n_fx.data.idx import load_mnist_split


def write_folder(data_root: str | Path, out: str | Path, n_train: int = 8000) -> Path:
    """Write the PNG folder (train/ and test/, one sub-folder per digit); returns ``out``."""
    images, labels = load_mnist_split(data_root, "test")  # (10000, 28, 28) uint8, (10000,)
    out = Path(out)
    for i, (img, label) in enumerate(zip(images.numpy(), labels.tolist(), strict=True)):
        folder = out / ("train" if i < n_train else "test") / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, mode="L").save(folder / f"{i:05d}.png")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", default="data", help="folder holding t10k-images-idx3-ubyte[.gz]")
    parser.add_argument("--out", default="/tmp/mnist_folder", help="where to write the image folder")
    args = parser.parse_args()
    print(f"wrote {write_folder(args.data_root, args.out)}")
