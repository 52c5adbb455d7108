"""What the precompressed copies cost: every document of an output directory
compressed at the candidate levels (CPU seconds, MB/s, compressed/original).

    python bench/compression.py feeds/          # e.g. WORKDIR/feedhub/feeds after bench/run.py

publish.ENCODINGS is what publishing uses; the others are the alternatives
it was chosen from (issue 13: copies were most of a cold publish).
"""

from __future__ import annotations

import argparse
import gzip
import time
from collections.abc import Callable
from pathlib import Path

import brotli
from isal import igzip

from feedhub.publish import COMPRESSED_TYPES, ENCODINGS

CANDIDATES: dict[str, Callable[[bytes], bytes]] = {
    "gzip (zlib) 4": lambda d: gzip.compress(d, 4, mtime=0),
    "gzip (zlib) 1": lambda d: gzip.compress(d, 1, mtime=0),
    "gzip (isal) 1": lambda d: igzip.compress(d, 1, mtime=0),
    "gzip (isal) 2": lambda d: igzip.compress(d, 2, mtime=0),
    "gzip (isal) 3": lambda d: igzip.compress(d, 3, mtime=0),
    "brotli 5": lambda d: brotli.compress(d, quality=5),
    "brotli 3": lambda d: brotli.compress(d, quality=3),
    "brotli 2": lambda d: brotli.compress(d, quality=2),
    "brotli 1": lambda d: brotli.compress(d, quality=1),
    "brotli 0": lambda d: brotli.compress(d, quality=0),
    **{f"publish.ENCODINGS[{suffix!r}]": encode for suffix, encode in ENCODINGS.items()},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    documents = [path.read_bytes() for path in sorted(args.directory.rglob("*"))
                 if path.suffix in COMPRESSED_TYPES and path.is_file()]
    total = sum(map(len, documents))
    print(f"{len(documents)} documents, {total / 1e6:.1f} MB")
    print("| encoding | CPU s | MB/s | compressed / original |\n|---|---:|---:|---:|")
    for name, encode in CANDIDATES.items():
        started = time.process_time()
        size = sum(len(encode(document)) for document in documents)
        cpu = time.process_time() - started
        print(f"| {name} | {cpu:.2f} | {total / cpu / 1e6:.0f} | {size / total:.3f} |")


if __name__ == "__main__":
    main()
