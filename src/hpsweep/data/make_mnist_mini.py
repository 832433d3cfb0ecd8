"""Rebuild the embedded `mnist_mini` dataset from the raw MNIST files.

    python -m hpsweep.data.make_mnist_mini ../shared/data/MNIST/raw

Writes the first 10,000 training and first 2,000 test images (and labels) as gzipped IDX files
into src/hpsweep/data/mnist_mini/. gzip's timestamp is fixed, so the output is byte-for-byte
reproducible and `git status` stays clean after a rebuild.
"""

import argparse
import gzip
from pathlib import Path

from hpsweep.data._splits import read_idx

OUT_DIR = Path(__file__).parent / "mnist_mini"
SIZES = {"train": 10_000, "t10k": 2_000}


def idx_bytes(raw: bytes, n: int) -> bytes:
    # IDX header: 2 zero bytes, dtype byte, ndim byte, then ndim big-endian uint32 sizes.
    ndim = raw[3]
    header = bytearray(raw[: 4 + 4 * ndim])
    header[4:8] = n.to_bytes(4, "big")
    item_size = 1
    for d in range(1, ndim):
        item_size *= int.from_bytes(raw[4 + 4 * d : 8 + 4 * d], "big")
    body = raw[4 + 4 * ndim : 4 + 4 * ndim + n * item_size]
    return bytes(header) + body


def build(raw_dir: Path, out_dir: Path = OUT_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for split, n in SIZES.items():
        for kind in ("images-idx3", "labels-idx1"):
            name = f"{split}-{kind}-ubyte"
            data = idx_bytes((raw_dir / name).read_bytes(), n)
            out = out_dir / f"{name}.gz"
            # filename="" keeps the output path out of the gzip header.
            with out.open("wb") as f, gzip.GzipFile("", "wb", fileobj=f, mtime=0) as gz:
                gz.write(data)
            read_idx(out)  # round-trip check: a broken header fails here, not at training time
            written.append(out)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw_dir", type=Path, help="folder with the uncompressed MNIST IDX files")
    parser.add_argument("--out", type=Path, default=OUT_DIR)
    args = parser.parse_args()
    for path in build(args.raw_dir, args.out):
        print(f"{path}  {path.stat().st_size / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
