#!/usr/bin/env python
"""Extract fields from invoices, images or PDFs with a trained token-classification checkpoint.

    python predict.py --model_name_or_path runs/invoices --input scans/ --output_dir predictions/

The front door of a checkout: the code is `layoutkit/apps/predict.py`, installed as `layoutkit predict` (run
`python predict.py --help` for every option). `accelerate launch --num_processes N predict.py ...` shards the
documents over processes.
"""

import sys

from layoutkit.apps.predict import main

if __name__ == "__main__":
    sys.exit(main())
