"""The prototype's design, kept as a benchmark baseline: a FastAPI service that receives one
transaction per HTTP request, computes the same PaySim features as fraudstream (without the
per-account history, which the prototype did not have), and scores it with a gradient-boosted
model (LightGBM, the same model file fraudstream's scorer serves).

Run: FRAUDSTREAM_MODEL=model.txt uvicorn app:app --workers 2 --port 28900
"""
import os

import lightgbm as lgb
import numpy as np
from fastapi import FastAPI
from pydantic import BaseModel

TYPES = ["PAYMENT", "TRANSFER", "CASH_OUT", "DEBIT", "CASH_IN"]
booster = lgb.Booster(model_file=os.environ.get("FRAUDSTREAM_MODEL", "model.txt"))
app = FastAPI()


class Transaction(BaseModel):
    step: int
    type: str
    amount: float
    nameOrig: str
    oldbalanceOrg: float
    newbalanceOrig: float
    nameDest: str
    oldbalanceDest: float
    newbalanceDest: float


def features(t: Transaction) -> list:
    # Same columns as fraudstream's common::features (history columns: a first-seen account).
    one_hot = [1.0 if t.type == x else 0.0 for x in TYPES]
    return [
        t.step, t.step % 24, *one_hot, t.amount, t.oldbalanceOrg, t.newbalanceOrig,
        t.oldbalanceDest, t.newbalanceDest,
        t.newbalanceOrig + t.amount - t.oldbalanceOrg,
        t.oldbalanceDest + t.amount - t.newbalanceDest,
        1.0 if t.nameDest.startswith("M") else 0.0,
        t.amount / (t.oldbalanceOrg + 1.0), t.amount / (t.oldbalanceDest + 1.0),
        1.0 if t.oldbalanceOrg > 0 and t.newbalanceOrig == 0 else 0.0,
        0.0, 0.0, -1.0,
    ]


@app.post("/predict")
def predict(t: Transaction):
    score = float(booster.predict(np.array([features(t)]), num_threads=1)[0])
    return {"score": score, "is_fraud": score >= 0.5}
