-- wrk: one PaySim transaction per request, as the prototype's sender posted them.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"step": 1, "type": "TRANSFER", "amount": 181.0, "nameOrig": "C1305486145", "oldbalanceOrg": 181.0, "newbalanceOrig": 0.0, "nameDest": "C553264065", "oldbalanceDest": 0.0, "newbalanceDest": 0.0}'
