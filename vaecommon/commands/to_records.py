"""Write a dataset to array_record files, for the streamed input (`train.py --input stream`).

    python scripts/to_records.py --dataset image_folder --data-dir photos/ --image-size 256 --out photos-ar/
    python scripts/to_records.py --dataset mnist5k --out mnist5k-ar/
    python scripts/train.py --dataset image_folder --data-source array_record --data-dir photos-ar/ --input stream

Each split becomes `<out>/<split>.array_record` (one record per example: the int64 label and the
uint8 pixels, H x W x C) with `<out>/dataset.json` (shape, counts, where it came from). An image
folder is converted one image at a time (decoded and resized once, here), so memory stays
bounded; other datasets are read whole, as training would. Training reads the folder with
`--data-source array_record --data-dir <out>`, resident or streamed; the examples and their
order are the same as from the original source.
"""

from __future__ import annotations

import json
import sys

from vaecommon.commands import _common as C
from vaecommon.datasets import DATASETS, SOURCES, SPLITS


def build_parser():
    p = C.parser(__doc__, "to-records")
    p.add_argument("--dataset", choices=DATASETS, required=True, help="the dataset to convert")
    p.add_argument("--data-source", choices=[s for s in SOURCES if s != "array_record"],
                   default="auto", help="where to read it (as train.py)")
    p.add_argument("--data-dir", default=None, help="its folder (image_folder, idx files)")
    p.add_argument("--image-size", type=C.positive, default=None,
                   help="image_folder: resize + centre-crop to this size (default: native; all "
                        "images must then have one size)")
    p.add_argument("--limit", type=C.positive, default=None,
                   help="convert only the first N examples of each split")
    p.add_argument("--split", choices=SPLITS, action="append", default=None,
                   help="convert only this split (repeatable; default: train and test)")
    p.add_argument("--out", required=True, help="a new folder for the .array_record files")
    return p


def main(argv=None) -> int:
    p = build_parser()
    args = p.parse_args(argv)
    with C.user_errors(p):
        from vaecommon import records

        meta = records.write_array_record(
            args.dataset, args.out, source=args.data_source, data_dir=args.data_dir,
            image_size=args.image_size, limit=args.limit, splits=tuple(args.split or SPLITS),
            progress=lambda split, i, n: C.say(f"[to-records] {split}: {i:,} / {n:,}"))
    print(json.dumps({"out": args.out, **meta}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
