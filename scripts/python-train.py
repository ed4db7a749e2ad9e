#!/usr/bin/env python3
"""Train a fraudstream model in Python, the way a data scientist would.

    PYTHONPATH=$(scripts/python-deps.sh) scripts/python-train.py \
        --features features.csv --out model.txt [--shuffle-seed 3] [--scores scores.csv]

--features is what `trainer features` writes: one column per feature the scorer computes, then
is_fraud, rows in time order. The model trains on the first 80% of the rows with the columns in the
frame's order (--shuffle-seed shuffles them first, as a pandas pipeline would) and is saved as
LightGBM text, which names its columns. `trainer import --model model.txt` then publishes it; the
scorer maps the names back to its own columns. --scores writes the model's score of every row, one
per line, computed by Python's LightGBM on the frame as trained.
"""
import argparse
import random
import sys

import lightgbm as lgb
import pandas as pd

PARAMS = {
    "objective": "binary",
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 200,
    "lambda_l2": 10,
    "max_depth": 8,
    "scale_pos_weight": 5,
    "num_threads": 1,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--features", required=True, help="CSV from `trainer features`")
    ap.add_argument("--out", required=True, help="where to write the LightGBM model text")
    ap.add_argument("--shuffle-seed", type=int, help="shuffle the feature columns with this seed")
    ap.add_argument("--rounds", type=int, default=60, help="boosting rounds (default 60)")
    ap.add_argument("--scores", help="write the score of every row here, one per line")
    args = ap.parse_args()

    frame = pd.read_csv(args.features)
    if "is_fraud" not in frame.columns:
        sys.exit(f"{args.features}: no is_fraud column; write it with `trainer features`")
    y = frame.pop("is_fraud")
    columns = list(frame.columns)
    if args.shuffle_seed is not None:
        random.Random(args.shuffle_seed).shuffle(columns)
        frame = frame[columns]
    train_rows = len(frame) * 8 // 10
    data = lgb.Dataset(frame.iloc[:train_rows], label=y.iloc[:train_rows])
    booster = lgb.train(PARAMS, data, num_boost_round=args.rounds)
    booster.save_model(args.out)
    print(f"trained {args.rounds} rounds on {train_rows} rows, columns {columns[:3]}…; wrote {args.out}")
    if args.scores:
        scores = booster.predict(frame)
        with open(args.scores, "w") as f:
            f.writelines(f"{float(s)!r}\n" for s in scores)
    return 0


if __name__ == "__main__":
    sys.exit(main())
