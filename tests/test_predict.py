"""predict: own images made MNIST-like, and a model trained on real MNIST reads drawn digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from cnnbench.cli import main
from cnnbench.model.predict import ImageError, preprocess_array, preprocess_image

STROKES = {  # on a 200 x 200 canvas, as someone would draw them
    "7": [[(50, 40), (150, 40), (90, 170)]],
    "1": [[(100, 30), (100, 175)]],
    "0": "ellipse",
}


def draw_digit(path: Path, digit: str, dark: bool = False) -> Path:
    paper, ink = (0, 255) if dark else (255, 0)
    im = Image.new("L", (200, 200), paper)
    d = ImageDraw.Draw(im)
    if STROKES[digit] == "ellipse":
        d.ellipse([60, 30, 140, 170], outline=ink, width=14)
    else:
        for line in STROKES[digit]:
            d.line(line, fill=ink, width=14)
    im.convert("RGB").save(path)
    return path


def centre_of_mass(a: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(a.shape)
    w = a.astype(float)
    return (ys * w).sum() / w.sum(), (xs * w).sum() / w.sum()


def test_light_background_is_inverted_fitted_into_20x20_and_centred(tmp_path):
    pre = preprocess_image(draw_digit(tmp_path / "seven.png", "7"))
    assert pre.inverted and pre.image.shape == (28, 28) and pre.image.dtype == np.uint8
    assert pre.image.max() == 255 and pre.image[0].max() == 0  # white ink on black
    ink = np.argwhere(pre.image > 0)
    height = ink[:, 0].max() - ink[:, 0].min() + 1
    assert 19 <= height <= 22  # the taller side fills the 20x20 box (Lanczos ringing: +1)
    cy, cx = centre_of_mass(pre.image)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5  # where MNIST's centres lie


def test_dark_background_is_kept(tmp_path):
    pre = preprocess_image(draw_digit(tmp_path / "one.jpg", "1", dark=True))
    assert not pre.inverted
    # A thin "1" keeps its aspect ratio: 20 px tall, only a few px wide.
    ink = np.argwhere(pre.image > 64)
    assert ink[:, 1].max() - ink[:, 1].min() + 1 <= 4


def test_a_blown_up_mnist_digit_comes_back_close_to_itself(mnist):
    original = mnist.x_test[0]  # a 7
    big = np.asarray(Image.fromarray(original).resize((280, 280), Image.Resampling.BICUBIC))
    again = preprocess_array(255 - big.astype(np.float64)).image  # drawn dark on light
    r = np.corrcoef(again.ravel().astype(float), original.ravel().astype(float))[0, 1]
    assert r > 0.9


def test_blank_image_and_non_image_are_errors(tmp_path):
    blank = tmp_path / "blank.png"
    Image.new("L", (50, 50), 255).save(blank)
    with pytest.raises(ImageError, match="blank.png: no ink found"):
        preprocess_image(blank)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png: not an image Pillow can identify; "
                                         "expected an image file"):
        preprocess_image(text)
    with pytest.raises(ImageError, match="gone.png: no such image file"):
        preprocess_image(tmp_path / "gone.png")


@pytest.mark.slow
def test_predict_reads_drawn_digits(mnist_weights, tmp_path, capsys):
    images = [draw_digit(tmp_path / "seven.png", "7"),
              draw_digit(tmp_path / "one.jpg", "1", dark=True),
              draw_digit(tmp_path / "zero.png", "0")]
    rc = main(["predict", str(mnist_weights), *map(str, images), "--show"])
    out = capsys.readouterr().out
    print(out)  # the report quotes it
    assert rc == 0
    for path, digit in zip(images, "710", strict=True):
        line = next(x for x in out.splitlines() if x.startswith(f"{path}: "))
        assert line.split(": ", 1)[1].startswith(f"{digit} ")  # top-1 is the drawn digit
        preview = path.with_name(f"{path.stem}.cnnbench.png")
        assert Image.open(preview).size == (224, 224)


@pytest.mark.slow
def test_weights_round_trip_gives_the_same_probabilities(mnist, tmp_path):
    """The reloaded model against the one in memory (BatchNorm statistics moved off their
    start, so they must travel too): the same probabilities, to the bit."""
    import torch

    from cnnbench.data.tensors import images_to_tensor
    from cnnbench.model.build import build_model, predict_proba
    from cnnbench.model.predict import predict
    from cnnbench.model.spec import get_spec
    from cnnbench.model.weights import load_weights, save_weights
    spec, classes = get_spec("CNN_MNIST_4"), [f"c{i}" for i in range(10)]
    torch.manual_seed(3)
    model = build_model(spec).eval()
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 2.0)
    path = save_weights(tmp_path / "w.safetensors", model, spec, classes, "mnist")
    loaded = load_weights(path)
    assert loaded.spec.name == "CNN_MNIST_4" and list(loaded.classes) == classes
    assert loaded.dataset == "mnist"
    x = mnist.x_test[:200]
    with torch.inference_mode():
        want = predict_proba(model, images_to_tensor(x))
        got = predict_proba(loaded.model.eval(), images_to_tensor(x))
    assert torch.equal(got, want)
    assert predict(loaded.model, x, loaded.classes, top=3) == predict(model, x, classes, top=3)


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    import torch
    from safetensors.torch import save_file

    from cnnbench.model.spec import SpecError
    from cnnbench.model.weights import load_weights
    path = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(path))
    with pytest.raises(SpecError, match="without cnnbench metadata"):
        load_weights(path)


# --- what was given instead of weights or images ----------------------------------------------

@pytest.fixture
def tiny_weights(tmp_path) -> Path:
    import torch

    from cnnbench.model.build import build_model
    from cnnbench.model.spec import build_spec
    from cnnbench.model.weights import save_weights
    spec = build_spec({"name": "tiny", "input_shape": [28, 28, 1], "layers": [
        {"Flatten": {}}, {"Dense": {"units": 10, "activation": "softmax"}}]})
    torch.manual_seed(0)
    return save_weights(tmp_path / "tiny.safetensors", build_model(spec), spec,
                        [str(i) for i in range(10)], "mnist")


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_torchscript_export_given_as_weights_says_what_it_is_and_what_is_expected(
        tiny_weights, tmp_path, capsys):
    from cnnbench.model.export import export
    from cnnbench.model.weights import load_weights
    pt = export(load_weights(tiny_weights), "torchscript", tmp_path / "x.pt")
    image = draw_digit(tmp_path / "seven.png", "7")
    assert main(["predict", str(pt), str(image)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{pt}: a zip archive (a TorchScript export" in line
    assert "expected a .safetensors file written by cnnbench" in line
    assert "header" not in line  # safetensors' own words mean nothing to the user


def test_weights_given_as_an_image_say_that_weights_go_first(tiny_weights, tmp_path, capsys):
    image = draw_digit(tmp_path / "seven.png", "7")
    assert main(["predict", str(tiny_weights), str(tiny_weights)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "not an image but a safetensors file (weights go first" in line
    assert main(["predict", str(tiny_weights), str(image)]) == 0


def test_a_missing_image_exits_2_and_the_other_images_are_still_read(tiny_weights, tmp_path,
                                                                     capsys):
    image = draw_digit(tmp_path / "seven.png", "7")
    missing = tmp_path / "missing.png"
    assert main(["predict", str(tiny_weights), str(missing), str(image)]) == 2
    captured = capsys.readouterr()
    assert one_error_line(captured.err) == f"cnnbench predict: error: {missing}: no such " \
                                           f"image file."
    assert f"{image}: " in captured.out


def test_a_preview_that_cannot_be_written_whole_leaves_the_previous_one(tiny_weights, tmp_path):
    import subprocess
    import sys
    image = draw_digit(tmp_path / "seven.png", "7")
    preview = tmp_path / "seven.cnnbench.png"
    preview.write_bytes(b"the previous preview")
    # A 100-byte file size limit makes the preview's write fail (EFBIG), as a full disk would.
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100)); "
               "from cnnbench.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", limited, "predict", str(tiny_weights),
                           str(image), "--show"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert one_error_line(proc.stderr) == f"cnnbench predict: error: File too large: {preview}"
    assert preview.read_bytes() == b"the previous preview"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "seven.cnnbench.png", "seven.png", "tiny.safetensors"]


def test_a_weights_path_that_does_not_exist_is_named_as_a_missing_file(tmp_path, capsys):
    from cnnbench.cli import main
    image = tmp_path / "seven.png"
    image.write_bytes(b"")
    missing = tmp_path / "nowhere" / "w.safetensors"
    for argv in (["predict", str(missing), str(image)],
                 ["export", str(missing), "--format", "safetensors"]):
        assert main(argv) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert f"{missing} does not exist; expected a .safetensors file" in line, line
