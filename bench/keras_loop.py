"""Keras 3 + TensorFlow on the same models and settings; run in the venv of `make bench-keras`.

Prints one JSON line per model: training and evaluation images per second.
Usage: .venv-keras/bin/python bench/keras_loop.py --models CNN_MNIST_1 --images 7680
       [--policy mixed_bfloat16]   (Keras' fast mode: bf16 compute, float32 variables)

With ``--study DATA.npz`` it runs the notebook's study instead: ``model.fit`` on the real
arrays (x_train, y_train, x_test, y_test as uint8) with ``validation_data``, ``--epochs``
epochs, one JSON line per model with its wall time and last val_accuracy
(bench/bench_study.py writes the file and calls this).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "src"))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cnnbench.model.spec import get_spec  # noqa: E402  (spec.py needs only pyyaml)


def keras_model(spec) -> keras.Model:
    """The spec as a Keras Sequential model, with Keras' own defaults for everything else.
    Under a mixed policy the last layer computes in float32, as Keras' mixed-precision guide
    asks of a softmax output."""
    layers = [keras.Input(shape=spec.input_shape)]
    mixed = keras.mixed_precision.global_policy().name != "float32"
    for i, layer in enumerate(spec.layers):
        a = dict(layer.args)
        if mixed and i == len(spec.layers) - 1:
            a["dtype"] = "float32"
        if layer.kind == "BatchNormalization":
            layers.append(keras.layers.BatchNormalization(momentum=0.99, epsilon=1e-3))
        else:
            layers.append(getattr(keras.layers, layer.kind)(**a))
    return keras.Sequential(layers, name=spec.name)


def compiled_model(name: str) -> keras.Model:
    model = keras_model(get_spec(name))
    model.compile(loss="categorical_crossentropy", metrics=["accuracy"],
                  optimizer=keras.optimizers.Adadelta(learning_rate=1.0, rho=0.95, epsilon=1e-7))
    return model


def study(models: list[str], path: str, epochs: int) -> None:
    """The notebook's cells: x / 255, one-hot labels, fit with validation_data, batch 128."""
    data = np.load(path)
    x, xt = (data[k].astype(np.float32)[..., None] / 255 for k in ("x_train", "x_test"))
    y, yt = (keras.utils.to_categorical(data[k], 10) for k in ("y_train", "y_test"))
    for name in models:
        start = time.perf_counter()
        model = compiled_model(name)
        hist = model.fit(x, y, batch_size=128, epochs=epochs, verbose=0,
                         validation_data=(xt, yt))
        print(json.dumps({"model": name, "seconds": time.perf_counter() - start,
                          "test_accuracy": hist.history["val_accuracy"][-1],
                          "keras": keras.__version__,
                          "policy": keras.mixed_precision.global_policy().name}), flush=True)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--models", nargs="+", required=True)
    p.add_argument("--images", type=int, default=128 * 40)
    p.add_argument("--eval-images", type=int, default=10000)
    p.add_argument("--study", help="an .npz of MNIST arrays: train on it as the notebook did")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--policy", default="float32", choices=["float32", "mixed_bfloat16"],
                   help="Keras' dtype policy: mixed_bfloat16 is its own fast mode")
    args = p.parse_args()
    keras.mixed_precision.set_global_policy(args.policy)
    if args.study:
        study(args.models, args.study, args.epochs)
        return
    rng = np.random.default_rng(0)
    x = rng.random((args.images, 28, 28, 1), dtype=np.float32)
    y = keras.utils.to_categorical(rng.integers(0, 10, args.images), 10)
    xe = rng.random((args.eval_images, 28, 28, 1), dtype=np.float32)
    ye = keras.utils.to_categorical(rng.integers(0, 10, args.eval_images), 10)
    for name in args.models:
        model = compiled_model(name)
        model.fit(x[:256], y[:256], batch_size=128, epochs=1, verbose=0)  # build + trace
        model.evaluate(xe[:1000], ye[:1000], batch_size=128, verbose=0)
        start = time.perf_counter()
        model.fit(x, y, batch_size=128, epochs=1, verbose=0)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        model.evaluate(xe, ye, batch_size=128, verbose=0)
        eval_s = time.perf_counter() - start
        print(json.dumps({"model": name, "train_ips": args.images / train_s,
                          "eval_ips": args.eval_images / eval_s,
                          "keras": keras.__version__, "policy": args.policy}), flush=True)


if __name__ == "__main__":
    main()
