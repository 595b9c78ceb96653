"""Accuracy of a model's ANN with its QCFS layers evaluated at other quantisation levels L.

A plain-conversion SNN run for T steps resolves each neuron's rate to θ/T, finer than the
ANN's λ/L grid once T > L; for long T it approaches the ANN with a finer (or no)
quantisation rather than the L the model was trained with. This prints that ANN's accuracy
for each L, with the trained thresholds λ unchanged (no simulation):

    python docs/results/ann_finer_L.py weights/vgg16_fmnist.npz --limit 2000 --L 4,8,16,10000
"""
import argparse

import numpy as np

from srp_np.datasets import load_shipped_test_set
from srp_np.evaluate import ann_logits, prepare_inputs
from srp_np.model import load_model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights")
    ap.add_argument("--limit", type=int, default=None, help="first N images of the shipped test split")
    ap.add_argument("--L", default="4,8,16,10000", help="comma-separated quantisation levels")
    a = ap.parse_args(argv)
    model = load_model(a.weights)
    x_raw, y = load_shipped_test_set()
    x_raw, y = x_raw[:a.limit], np.asarray(y[:a.limit])
    x = prepare_inputs(model, x_raw)
    trained = model.L
    print(f"{a.weights}: ANN accuracy on the first {len(y)} shipped test images, trained with L = {trained}")
    print("| L | ANN accuracy |\n|---:|---:|")
    for L in (int(v) for v in a.L.split(",")):
        model.graph["L"] = L
        acc = float(np.mean(ann_logits(model, x).argmax(1) == y))
        print(f"| {L}{' (trained)' if L == trained else ''} | {100 * acc:.2f}% |")
    model.graph["L"] = trained


if __name__ == "__main__":
    main()
