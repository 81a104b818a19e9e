"""fsplit-data: install the offline training corpus (Debian packages of photographs, object
cut-outs and camera sequences; ~440 MB) with a manifest of files, licences, sizes and checksums.

    fsplit-data                 # install into ~/.cache/fsplit_ros/corpus (or $FSPLIT_CORPUS)
    fsplit-data --verify        # recompute every checksum against the manifest
    fsplit-data --summary       # files / groups / held-out files per role

The test suite never needs it; training and evaluation use it when it is installed
(fsplit_ros/datasets/corpus.py says what each package is for and what is held out).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fsplit_ros.datasets import corpus


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fsplit-data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=None, help="install folder (default: %(default)s = "
                    "~/.cache/fsplit_ros/corpus or $FSPLIT_CORPUS)")
    ap.add_argument("--verify", action="store_true", help="check every file's sha256 and exit")
    ap.add_argument("--summary", action="store_true", help="print counts per role and exit")
    ap.add_argument("--any-version", action="store_true",
                    help="take the archive's current package versions instead of the pinned ones")
    args = ap.parse_args(argv)
    try:
        if args.verify:
            manifest = corpus.verify(args.root)
            n = sum(len(p["files"]) for p in manifest["packages"].values())
            print(f"corpus OK: {n} files match the manifest")
            return 0
        if not args.summary:
            root = corpus.install(args.root, any_version=args.any_version)
            print(f"corpus installed in {root} (manifest: {root / 'manifest.json'})")
        print(json.dumps(corpus.summary(args.root), indent=1))
    except corpus.CorpusError as exc:
        print(f"fsplit-data: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
