"""The torch modules built from a spec (model/build.py, model/modules.py, model/init.py): their
shapes and parameter counts are the spec's, they start as Keras initialises, and BatchNorm and
Dropout behave as Keras 2.2's, a batch of one included."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import cnnbench_main, run_args, tiny_spec
from torch import nn

from cnnbench.model.build import build_model
from cnnbench.model.init import keras_init_
from cnnbench.model.loss import predict_proba
from cnnbench.model.spec import build_spec, get_spec

SOFTMAX_3 = {"Dense": {"units": 3, "activation": "softmax"}}


def spec_of(*layers, input_shape=(28, 28, 1)):
    return build_spec({"name": "t", "input_shape": list(input_shape), "layers": list(layers)})


def torch_param_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, non-trainable) as Keras counts them: BN moving mean/var are non-trainable."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(b.numel() for name, b in model.named_buffers()
                 if name.endswith(("running_mean", "running_var")))
    return trainable, frozen


# --- the module computes exactly the shapes spec.py infers ------------------------------

SHAPE_CONFIGS = {
    "seed model 1 (same 5x5)": ("CNN_MNIST_1", None),
    "seed model 4 (valid, BN)": ("CNN_MNIST_4", None),
    "same, stride 2, even kernel, odd size": (None, ([
        {"Conv2D": {"filters": 4, "kernel_size": 4, "strides": 2, "padding": "same"}},
        {"Conv2D": {"filters": 5, "kernel_size": 2, "strides": 2, "padding": "same"}},
        {"Conv2D": {"filters": 6, "kernel_size": [2, 3], "strides": [1, 2], "padding": "same"}},
        "Flatten", SOFTMAX_3], (15, 13, 2))),
    "pooling same / strided / average": (None, ([
        {"Conv2D": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}},
        {"AveragePooling2D": {"pool_size": 3, "strides": 2, "padding": "same"}},
        {"MaxPooling2D": {"pool_size": 2, "padding": "same"}},
        {"AveragePooling2D": {"pool_size": 2}},
        {"MaxPooling2D": {"pool_size": 3, "strides": 1}},
        "Flatten", SOFTMAX_3], (23, 23, 1))),
    "strided valid, BN, global average pooling": (None, ([
        {"Conv2D": {"filters": 4, "kernel_size": 3, "strides": 2}},
        {"BatchNormalization": {}},
        {"Activation": {"activation": "tanh"}},
        {"Conv2D": {"filters": 8, "kernel_size": [3, 1], "strides": [1, 2], "use_bias": False}},
        "GlobalAveragePooling2D",
        {"Dense": {"units": 7, "activation": "elu"}},
        {"BatchNormalization": {}},
        {"Dropout": {"rate": 0.3}},
        SOFTMAX_3], (20, 17, 3))),
}


@pytest.mark.slow
@pytest.mark.parametrize("config", list(SHAPE_CONFIGS))
def test_module_output_shapes_equal_spec_shapes_layer_by_layer(config):
    name, custom = SHAPE_CONFIGS[config]
    spec = get_spec(name) if name else spec_of(*custom[0], input_shape=custom[1])
    raw_layers = spec.raw["layers"]
    h, w, c = spec.input_shape
    x = torch.rand(2, c, h, w)
    # Build each prefix of the spec, closed by a softmax head, and run the prefix's modules.
    for i, layer in enumerate(spec.layers[:-1], start=1):
        is_image = len(layer.output_shape) == 3
        head = (["Flatten"] if is_image else []) + [SOFTMAX_3]
        prefix = build_spec({"name": "p", "input_shape": list(spec.input_shape),
                             "layers": raw_layers[:i] + head})
        model = build_model(prefix).eval()
        body = model[:-len(head)]
        out = body(x)
        if is_image:
            oh, ow, oc = layer.output_shape
            assert tuple(out.shape) == (2, oc, oh, ow), f"layer {i} ({layer.label()})"
        else:
            assert tuple(out.shape) == (2, *layer.output_shape), f"layer {i} ({layer.label()})"
    model = build_model(spec).eval()
    assert tuple(model(x).shape) == (2, spec.num_classes)


def test_same_padding_puts_the_extra_pixel_after_as_tensorflow():
    # 1 channel, a 4x4 input, a 2x2 kernel of ones, stride 2 -> 'same' needs no padding;
    # 5x5, stride 2 -> out 3, total padding 1, all of it after (bottom/right).
    spec = spec_of({"Conv2D": {"filters": 1, "kernel_size": 2, "strides": 2, "padding": "same",
                               "use_bias": False}}, "Flatten", SOFTMAX_3, input_shape=(5, 5, 1))
    model = build_model(spec)
    conv = next(m for m in model if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        conv.weight.fill_(1.0)
    x = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5)
    out = model[:-2](x)[0, 0]
    assert out[0, 0].item() == 0 + 1 + 5 + 6
    assert out[2, 2].item() == 24  # the last window holds only x[4, 4]: padding after
    assert out[0, 2].item() == 4 + 9


def test_average_pooling_same_ignores_padding_and_max_pooling_same_pads_with_minus_inf():
    spec = spec_of({"AveragePooling2D": {"pool_size": 3, "strides": 2, "padding": "same"}},
                   "Flatten", SOFTMAX_3, input_shape=(6, 6, 1))
    out = build_model(spec)[:-2](torch.ones(1, 1, 6, 6))
    assert torch.equal(out, torch.ones(1, 1, 3, 3))  # Keras: padded zeros are not averaged
    spec = spec_of({"MaxPooling2D": {"pool_size": 2, "padding": "same"}},
                   "Flatten", SOFTMAX_3, input_shape=(5, 5, 1))
    out = build_model(spec)[:-2](-torch.ones(1, 1, 5, 5))
    assert torch.equal(out, -torch.ones(1, 1, 3, 3))  # not 0 at the padded border


# --- parameter counts --------------------------------------------------------------------

@pytest.mark.parametrize("name, trainable, frozen", [
    ("CNN_MNIST_1", 3_274_634, 0),
    ("CNN_MNIST_2", 5_367_694, 256),
    ("CNN_MNIST_3", 5_367_566, 0),
    ("CNN_MNIST_4", 5_367_822, 256),
])
def test_torch_module_has_keras_parameter_counts(name, trainable, frozen):
    model = build_model(get_spec(name))
    assert torch_param_counts(model) == (trainable, frozen)
    assert trainable + frozen == get_spec(name).params


def test_module_returns_logits_and_predict_proba_applies_the_softmax():
    spec = get_spec("CNN_MNIST_1")
    model = build_model(spec).eval()
    assert not any(isinstance(m, nn.Softmax) for m in model)
    x = torch.rand(3, 1, 28, 28)
    p = predict_proba(model, x)
    assert torch.allclose(p.sum(1), torch.ones(3))
    assert torch.allclose(p, torch.softmax(model(x), 1))


# --- Keras initialisation ----------------------------------------------------------------

def test_glorot_uniform_kernels_and_zero_biases():
    torch.manual_seed(0)
    model = build_model(get_spec("CNN_MNIST_1"))
    convs = [m for m in model if isinstance(m, nn.Conv2d)]
    denses = [m for m in model if isinstance(m, nn.Linear)]
    # (module, fan_in, fan_out) as Keras computes them: receptive field times channels.
    cases = [(convs[0], 1 * 25, 32 * 25), (convs[1], 32 * 25, 64 * 25),
             (denses[0], 3136, 1024), (denses[1], 1024, 10)]
    for module, fan_in, fan_out in cases:
        bound = math.sqrt(6 / (fan_in + fan_out))
        w = module.weight.detach()
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() > 0.99 * bound  # nearly reached: the full range is used
        assert torch.count_nonzero(module.bias).item() == 0
    # A large layer: the standard deviation of U(-b, b) is b / sqrt(3) = sqrt(2/(in+out)).
    w = denses[0].weight.detach()
    glorot_std = math.sqrt(2 / (3136 + 1024))
    assert w.std().item() == pytest.approx(glorot_std, rel=0.01)
    assert abs(w.mean().item()) < 0.01 * glorot_std


def test_batchnorm_starts_at_identity():
    model = build_model(get_spec("CNN_MNIST_2"))
    bn = next(m for m in model if isinstance(m, nn.BatchNorm2d))
    assert torch.equal(bn.weight, torch.ones(128)) and torch.equal(bn.bias, torch.zeros(128))
    assert torch.equal(bn.running_mean, torch.zeros(128))
    assert torch.equal(bn.running_var, torch.ones(128))


def test_keras_init_replaces_torch_defaults():
    lin = nn.Linear(50, 40)  # torch's default: kaiming-uniform bound 1/sqrt(50), nonzero bias
    keras_init_(lin)
    assert torch.count_nonzero(lin.bias).item() == 0
    assert lin.weight.abs().max().item() > 1 / math.sqrt(50)  # beyond torch's own bound


# --- BatchNormalization: Keras momentum 0.99, epsilon 1e-3 -------------------------------

@pytest.mark.parametrize("conv", [True, False])
def test_batchnorm_momentum_and_epsilon_are_keras(conv):
    torch.manual_seed(1)
    if conv:
        spec = spec_of({"Conv2D": {"filters": 3, "kernel_size": 3}}, {"BatchNormalization": {}},
                       "Flatten", SOFTMAX_3, input_shape=(6, 6, 1))
    else:
        spec = spec_of("Flatten", {"Dense": {"units": 4}}, {"BatchNormalization": {}},
                       SOFTMAX_3, input_shape=(6, 6, 1))
    model = build_model(spec).train()
    bn = next(m for m in model if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d))
    seen = {}
    bn.register_forward_hook(lambda m, i, o: seen.update(x=i[0].detach(), y=o.detach()))
    model(torch.rand(8, 1, 6, 6) * 3)

    x = seen["x"]
    dims = (0, 2, 3) if conv else (0,)
    n = x.numel() // x.shape[1]
    mean = x.mean(dims)
    biased_var = ((x - mean.view(1, -1, *[1] * (x.dim() - 2))) ** 2).sum(dims) / n
    unbiased_var = biased_var * n / (n - 1)
    # Keras: moving = 0.99 * moving + 0.01 * batch statistic (moving_mean 0, moving_var 1).
    assert torch.allclose(bn.running_mean, 0.99 * 0 + 0.01 * mean, rtol=1e-5, atol=1e-7)
    assert torch.allclose(bn.running_var, 0.99 * 1 + 0.01 * unbiased_var, rtol=1e-5, atol=1e-7)
    # Training-mode output uses the batch's biased variance and Keras' epsilon 1e-3.
    shape = (1, -1) + (1,) * (x.dim() - 2)
    expected = (x - mean.view(shape)) / torch.sqrt(biased_var.view(shape) + 1e-3)
    assert torch.allclose(seen["y"], expected, atol=1e-5)
    assert bn.eps == 1e-3


# --- BatchNormalization on a batch of one --------------------------------------------------

def test_dense_batchnorm_trains_on_a_last_batch_of_one(tmp_path):
    # 25 images in batches of 8: the last batch holds one image (torch refused it every epoch).
    spec = tiny_spec(tmp_path, {"Dense": {"units": 16, "activation": "relu"}},
                     {"BatchNormalization": {}})
    code, out, err = cnnbench_main(*run_args(tmp_path, spec, n_train=25), "--batch-size", "8",
                                   "--epochs", "2")
    assert code == 0, err
    assert "Epoch 2/2 - 4/4 - " in out
    doc = json.loads((tmp_path / "out" / "results.json").read_text())
    assert doc["models"]["tiny"]["status"] == "finished"


def test_batchnorm_on_one_value_per_channel_is_keras_arithmetic():
    import torch

    from cnnbench.model.build import BatchNorm1d, BatchNorm2d
    for bn, x in ((BatchNorm1d(3, eps=1e-3, momentum=0.01), torch.tensor([[1.0, -2.0, 4.0]])),
                  (BatchNorm2d(3, eps=1e-3, momentum=0.01),
                   torch.tensor([1.0, -2.0, 4.0]).view(1, 3, 1, 1))):
        bn.running_var.fill_(2.0)
        with torch.no_grad():
            bn.bias.copy_(torch.tensor([0.5, 0.25, -1.0]))
        x.requires_grad_(True)
        y = bn.train()(x)
        # The batch's variance is 0: the output is beta, the input's gradient 0.
        assert y.flatten().tolist() == [0.5, 0.25, -1.0]
        y.sum().backward()
        assert x.grad.abs().sum().item() == 0.0
        # Keras: moving_mean = 0.99 * 0 + 0.01 * x; moving_variance = 0.99 * 2 + 0.01 * 0.
        assert torch.allclose(bn.running_mean, 0.01 * torch.tensor([1.0, -2.0, 4.0]))
        assert torch.allclose(bn.running_var, torch.full((3,), 1.98))
        assert bn.num_batches_tracked.item() == 1


# --- Dropout -----------------------------------------------------------------------------

def test_dropout_keeps_each_unit_with_probability_one_minus_rate_and_scales_it():
    from cnnbench.model.build import Dropout

    drop = Dropout(0.25)
    x = torch.ones(200, 64, 8, 8).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    out = drop(x)
    kept = out != 0
    assert kept.float().mean().item() == pytest.approx(0.75, abs=0.005)
    assert torch.equal(out[kept], torch.full_like(out[kept], 1 / 0.75))  # Keras' scaling
    assert out.is_contiguous(memory_format=torch.channels_last)  # no layout reorder after it
    torch.manual_seed(0)
    assert torch.equal(drop(x), out)  # the mask comes from torch's global generator
    drop.eval()
    assert drop(x) is x  # inference: the identity, as Keras' learning_phase 0


def test_dropout_gradient_flows_through_kept_units_only():
    from cnnbench.model.build import Dropout

    x = torch.ones(1000, requires_grad=True)
    torch.manual_seed(3)
    out = Dropout(0.5)(x)
    out.sum().backward()
    assert torch.equal(x.grad, (out.detach() != 0).float() * 2.0)
