"""jpmml-evaluator's scoring rate on the same PMML file and rows as
examples/pmml_score.rs: the independent half of bench/processors.sh.

  pmml_rate.py FILE ROWS_JSON [SECONDS]

Rows go to Java in one evaluateAll call per batch (py4j), as a user of the
library would score a table.
"""
import json
import sys
import time

import pandas as pd
from jpmml_evaluator import make_evaluator

path, rows_file = sys.argv[1], sys.argv[2]
secs = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
rows = pd.DataFrame(json.load(open(rows_file)))
evaluator = make_evaluator(path, backend="py4j").verify()
evaluator.evaluateAll(rows)
start, scored = time.monotonic(), 0
while time.monotonic() - start < secs:
    evaluator.evaluateAll(rows)
    scored += len(rows)
rate = scored / (time.monotonic() - start)
print(f"jpmml-evaluator {path}: {rate:.0f} rows/s ({len(rows)} rows per call)", flush=True)
