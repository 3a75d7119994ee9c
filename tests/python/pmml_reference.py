"""PMML files from scikit-learn models, and what two independent
implementations predict with them: scikit-learn itself and jpmml-evaluator.

  pmml_reference.py OUT_DIR

Trains on fixed synthetic data (seeded): logistic regression, a decision
tree, a random forest and gradient boosting (binary and three-class), and a
linear and a boosted regression; writes each as OUT_DIR/<name>.pmml with
sklearn2pmml, and OUT_DIR/reference.json:
  {name: {"classes": [...] | null, "rows": [...],
          "sklearn": [[p per class] | value, ...],
          "jpmml": [[p per class] | value, ...],
          "missing_rows": [...], "jpmml_missing": [...]}}
"missing_rows" leave one field out per row: scikit-learn cannot score those,
so only jpmml-evaluator answers them. lr_imputed.pmml is a logistic
regression behind a mean imputer (PMML's missingValueReplacement): the model
of PAI-EAS's pmmlasync example, which answers the example request [{}].
"""
import json
import os
import sys

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification, make_regression
from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor, RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.tree import DecisionTreeClassifier
from sklearn2pmml import sklearn2pmml
from sklearn2pmml.pipeline import PMMLPipeline
from jpmml_evaluator import make_evaluator

out = sys.argv[1]
os.makedirs(out, exist_ok=True)


def frame(X, n):
    return pd.DataFrame(X, columns=[f"x{i + 1}" for i in range(n)])


Xc, yc = make_classification(n_samples=400, n_features=4, n_informative=3, n_redundant=0, random_state=7)
X3, y3 = make_classification(n_samples=400, n_features=4, n_informative=3, n_redundant=0, n_classes=3, random_state=7)
Xr, yr = make_regression(n_samples=400, n_features=3, noise=0.5, random_state=1)

models = [
    ("lr", Xc, yc, [("m", LogisticRegression())], True),
    ("dt", Xc, yc, [("m", DecisionTreeClassifier(max_depth=5, random_state=0))], True),
    ("rf", Xc, yc, [("m", RandomForestClassifier(n_estimators=20, max_depth=5, random_state=0))], True),
    ("gb", Xc, yc, [("m", GradientBoostingClassifier(n_estimators=20, max_depth=3, random_state=0))], True),
    ("lr3", X3, y3, [("m", LogisticRegression())], True),
    ("gb3", X3, y3, [("m", GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0))], True),
    ("linreg", Xr, yr, [("m", LinearRegression())], False),
    ("gbr", Xr, yr, [("m", GradientBoostingRegressor(n_estimators=20, max_depth=3, random_state=0))], False),
    ("lr_imputed", Xc, yc, [("imp", SimpleImputer(strategy="mean")), ("m", LogisticRegression())], True),
]

reference = {}
rng = np.random.default_rng(3)
for name, X, y, steps, classifier in models:
    n = X.shape[1]
    df = frame(X, n)
    pipeline = PMMLPipeline(steps)
    pipeline.fit(df.iloc[:300], pd.Series(y[:300], name="y"))
    path = os.path.join(out, name + ".pmml")
    sklearn2pmml(pipeline, path)
    rows = df.iloc[300:340]
    evaluator = make_evaluator(path, backend="py4j").verify()
    scored = evaluator.evaluateAll(rows)
    entry = {"rows": rows.to_dict(orient="records")}
    if classifier:
        classes = [int(c) for c in pipeline.classes_]
        entry["classes"] = classes
        entry["sklearn"] = pipeline.predict_proba(rows).tolist()
        entry["jpmml"] = [[float(r[f"probability({c})"]) for c in classes] for _, r in scored.iterrows()]
    else:
        entry["classes"] = None
        entry["sklearn"] = pipeline.predict(rows).tolist()
        entry["jpmml"] = [float(r["y"]) for _, r in scored.iterrows()]
    # Rows with one field missing: only jpmml-evaluator answers them.
    missing = []
    for i, row in enumerate(entry["rows"][:10]):
        row = dict(row)
        del row[f"x{rng.integers(1, n + 1)}"]
        missing.append(row)
    scored = evaluator.evaluateAll(pd.DataFrame(missing, columns=list(df.columns)))
    if classifier:
        got = [[r.get(f"probability({c})") for c in entry["classes"]] for _, r in scored.iterrows()]
    else:
        got = [[r.get("y")] for _, r in scored.iterrows()]
    entry["missing_rows"] = missing
    entry["jpmml_missing"] = [[None if v is None or (isinstance(v, float) and np.isnan(v)) else float(v) for v in r] for r in got]
    reference[name] = entry

# The pmmlasync example's request, [{}]: every field missing.
evaluator = make_evaluator(os.path.join(out, "lr_imputed.pmml"), backend="py4j").verify()
empty = evaluator.evaluateAll(pd.DataFrame([{}], columns=["x1", "x2", "x3", "x4"]))
reference["lr_imputed"]["empty_row"] = [float(empty.iloc[0][f"probability({c})"]) for c in (0, 1)]

with open(os.path.join(out, "reference.json"), "w") as f:
    json.dump(reference, f)
print("ok", flush=True)
