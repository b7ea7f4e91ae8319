"""Scratch (as run, 2026-11-29): GMN editor variants, scored on the VALIDATION
images (edit() with test rows = val rows), 5 epochs.

    PYTHONPATH=. nice -n 10 python ablate_gmn_editor.py {shared|independent} 5

The variants are spelled out in full (when this ran, the defaults were
input_scale=True, update_scale=True; the study now uses update_scale=False).
"""
import functools, json, os, sys, time
import torch
torch.set_num_threads(1)
from pathlib import Path
from analyses.inr import run as study
regime, epochs = sys.argv[1], int(sys.argv[2])
s = study.load_fitted(Path("/tmp/inredit/zoos") / regime, regime)
tr, va, te = study.split_set(s, 0)
study.EDITORS = ("gmn",)
ORIG = study.GMNEditor
out = {"loadavg_start": os.getloadavg()}
for name, kw in [("tensor_in+tensor_out", {"input_scale": True, "update_scale": True}),
                 ("tensor_in+raw_out", {"input_scale": True, "update_scale": False}),
                 ("raw_in+raw_out", {"input_scale": False, "update_scale": False}),
                 ("raw_in+tensor_out", {"input_scale": False, "update_scale": True})]:
    study.GMNEditor = functools.partial(ORIG, **kw)
    t = time.time()
    res, _ = study.edit(s, (tr, va, va), epochs=epochs, seed=0, log=lambda m: None)
    out[name] = {"val_mse": res["gmn"]["mse"], "low": res["gmn"]["low"], "high": res["gmn"]["high"], "seconds": round(time.time() - t)}
    print(regime, name, out[name], flush=True)
out["loadavg_end"] = os.getloadavg()
Path(f"/tmp/inredit/ablate_{regime}.json").write_text(json.dumps(out, indent=1))
