"""Print the identity and sequence of the first test sentence of a named split (for the pipelines' animate step).

    python pipelines/test_sentence.py STORE SPLIT      # e.g. out/demo/store sentence  ->  "IDENTITY SEQUENCE"
"""

from __future__ import annotations

import sys

from facedata.store import Store
from meshtalk.data import select_sequences

if __name__ == "__main__":
    store, split = sys.argv[1], sys.argv[2]
    first = select_sequences(Store(store), split=split, subset="test")[0]  # sorted by identity, then sequence
    print(first.identity, first.sequence)
