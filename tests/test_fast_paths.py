"""Each fast path of the engine computes the same function as the plain reference path."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

from cnnbench.data.tensors import images_to_tensor, labels_to_tensor
from cnnbench.model.build import build_model, clipped_categorical_crossentropy
from cnnbench.model.spec import get_spec, list_models
from cnnbench.train import fastpath
from cnnbench.train import precision as precision_module
from cnnbench.train.engine import (
    TrainConfig,
    evaluate,
    make_train_step,
)
from cnnbench.train.fastpath import optimizer_step, prepare_model
from cnnbench.train.optim import make_optimizer
from cnnbench.train.precision import resolve_precision


def _batch(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def _reference_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                    steps: int) -> list[float]:
    """The loop a user would write: torch's Adadelta."""
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0, rho=0.95, eps=1e-7)
    losses = []
    for _ in range(steps):
        logits = model(x)
        loss = clipped_categorical_crossentropy(logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models("CNN_MNIST_*"))
def test_channels_last_forward_and_gradients_match_nchw(name: str) -> None:
    torch.manual_seed(0)
    ref = build_model(get_spec(name)).eval()
    fast = prepare_model(copy.deepcopy(ref))
    assert fast[0].weight.is_contiguous(memory_format=torch.channels_last)
    x, y = _batch()
    out_ref, out_fast = ref(x), fast(x)
    torch.testing.assert_close(out_fast, out_ref, rtol=1e-4, atol=1e-5)
    clipped_categorical_crossentropy(out_ref, y).backward()
    clipped_categorical_crossentropy(out_fast, y).backward()
    for (n, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, rtol=1e-3, atol=1e-6, msg=n)


def _refuse_eager_adadelta(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on the fused step must run: a fallback to the eager one is an error."""
    def refuse(self, closure=None):
        raise AssertionError("the eager Adadelta step ran: the fused kernel was not used")
    monkeypatch.setattr(torch.optim.Adadelta, "step", refuse)
    warnings.filterwarnings("error", message="fused Adadelta unavailable")


@pytest.mark.slow
def test_compiled_adadelta_step_matches_eager_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    ref = build_model(get_spec("CNN_MNIST_1"))
    fast = copy.deepcopy(ref)
    x, y = _batch(32)
    torch.manual_seed(1)  # the same dropout masks for both
    ref_losses = _reference_step(ref, x, y, steps=4)
    with warnings.catch_warnings():
        _refuse_eager_adadelta(monkeypatch)
        step = make_train_step(fast, TrainConfig(), compile_optimizer=True)
        torch.manual_seed(1)
        fast_losses = [step(x, y)[0].item() for _ in range(4)]
    assert fast_losses == pytest.approx(ref_losses, rel=1e-4)
    for p_ref, p_fast in zip(ref.parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p_fast, p_ref, rtol=1e-4, atol=1e-6)
    assert int(step.optimizer.state[fast[0].weight]["step"]) == 4  # the real optimizer's state


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_run_gives_the_same_bits_with_either_fused_step_or_without_a_compiler(
        monkeypatch: pytest.MonkeyPatch, precision: str) -> None:
    """The fused Adadelta update from the first step (the C loop, or torch.compile's kernel:
    the CUDA path, compiled here for the CPU), or never (no compiler): the same weights, bit
    for bit, after four training steps."""
    x, y = _batch(32)

    def train(fused: str) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = build_model(get_spec("CNN_MNIST_4"))  # Conv2D, BatchNorm (fp32 in bf16), Dense
        with monkeypatch.context() as m:
            m.setattr(fastpath, "_kernels", {})

            def build(*args: object) -> object:
                if fused == "none":
                    raise RuntimeError("no compiler here")
                return (fastpath._compiled_update if fused == "compiled" else real)(*args)
            real = fastpath._build
            m.setattr(fastpath, "_build", build)
            if fused != "none":  # the eager form may not run: the fused step serves every tensor
                m.setattr(fastpath, "_sqrt", None)
            step = make_train_step(model, TrainConfig(precision=precision))
            assert step.wait_compiled() is (fused != "none")
            for _ in range(4):
                step(x, y)
        return [p.detach().clone() for p in model.parameters()]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the "no compiler" warning
        never = train("none")
    for fused in ("native", "compiled"):
        for a, c in zip(train(fused), never, strict=True):
            assert torch.equal(a, c), fused


def test_the_c_loop_is_the_eager_form_bit_for_bit_on_hard_values() -> None:
    """Weights from 1e-8 to 1e3, tiny and huge gradients, a tensor split across threads:
    every output of the C loop (fp32, and bf16 gradient plus bf16 weight copy) is the eager
    form's, bits included."""
    from cnnbench.data.datasets import default_cache_dir
    from cnnbench.train.native_adadelta import PARALLEL_FROM, load
    kernel = load(default_cache_dir())
    torch.manual_seed(0)
    for n in (2, 1001, PARALLEL_FROM + 17):
        scale = torch.logspace(-8, 3, n)[torch.randperm(n)]
        p, g = torch.randn(n) * scale, torch.randn(n) * scale.flip(0) * 1e-3
        sq, acc = torch.rand(n) * 1e-4, torch.rand(n) * 1e-6
        for bf16 in (False, True):
            eager, native = [[t.clone() for t in (p, g, sq, acc)] for _ in range(2)]
            p16 = [torch.empty(n, dtype=torch.bfloat16) for _ in range(2)]
            g16 = g.bfloat16()
            for _ in range(3):
                if bf16:
                    fastpath._adadelta_update_bf16(eager[0], g16, *eager[2:], p16[0], 1.0, 0.95,
                                                   1e-7, sqrt=fastpath._sqrt)
                    kernel.update(native[0], g16, *native[2:], p16[1], 1.0, 0.95, 1e-7)
                else:
                    fastpath._adadelta_update(*eager, 1.0, 0.95, 1e-7, sqrt=fastpath._sqrt)
                    kernel.update(*native, None, 1.0, 0.95, 1e-7)
            copies = [[p16[0]], [p16[1]]] if bf16 else [[], []]
            for a, b in zip(eager + copies[0], native + copies[1], strict=True):
                assert a.dtype == b.dtype and torch.equal(a, b), (n, bf16)
            assert not torch.equal(native[0], p)  # it moved


def test_ctrl_c_during_the_fused_step_is_raised_once_the_step_is_whole(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal at a random moment of a stream of fused steps through torch.compile's kernel
    (the CUDA path) raises KeyboardInterrupt every time (a compiled call drops it otherwise:
    about 1 in 7 of those that land there; CI once saw a run finish after Ctrl-C), and never
    between two parameters' updates.
    SIGALRM stands in for SIGINT: a timer lands it in the main thread as a terminal would."""
    import random
    import signal
    import time

    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(64)) for _ in range(16)]
    opt = torch.optim.Adadelta(params, lr=1.0, rho=0.95, eps=1e-7)
    monkeypatch.setattr(fastpath, "_kernels", {})  # torch.compile's kernel: dynamo's path
    monkeypatch.setattr(fastpath, "_build", fastpath._compiled_update)
    step = optimizer_step(opt)
    for p in params:
        p.grad = torch.randn_like(p)
    assert step.wait_compiled()
    monkeypatch.setattr(fastpath, "_HELD_SIGNALS", (signal.SIGALRM,))
    rng, raised, tries = random.Random(0), 0, 500
    previous = signal.signal(signal.SIGALRM, signal.default_int_handler)
    try:
        for _ in range(tries):
            try:
                signal.setitimer(signal.ITIMER_REAL, rng.uniform(1e-5, 5e-4))
                for _ in range(10):  # 3 ms or more: the alarm rings among these steps
                    step()
                time.sleep(0.002)
            except KeyboardInterrupt:
                raised += 1
                assert len({int(opt.state[p]["step"]) for p in params}) == 1  # a whole step
        assert signal.getsignal(signal.SIGALRM) is signal.default_int_handler  # put back
        assert torch.is_grad_enabled()  # no step left its no_grad on
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        torch.set_grad_enabled(True)  # whatever happened, the next tests get autograd
    assert raised == tries


def test_eager_square_root_is_correctly_rounded() -> None:
    """The eager form's sqrt against NumPy's float32 sqrt (IEEE: correctly rounded), over
    magnitudes from subnormal to huge; torch's own eager sqrt misses on some of them."""
    import numpy as np

    g = torch.Generator().manual_seed(0)
    x = torch.rand(200_000, generator=g) * 10 ** torch.empty(200_000).uniform_(-44, 38,
                                                                                generator=g)
    x[:4] = torch.tensor([0.0, 1e-45, 4.0, float("inf")])
    want = torch.from_numpy(np.sqrt(x.numpy()))
    assert torch.equal(fastpath._sqrt(x), want)


def _autocast_loop(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int,
                   compiled: bool) -> list[float]:
    """bf16 as torch.autocast does it, with cnnbench's own optimizer step (fused or eager)."""
    opt = make_optimizer(model)
    step = optimizer_step(opt, compile=compiled)
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
        loss = clipped_categorical_crossentropy(logits, y)
        opt.zero_grad()
        loss.backward()
        step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "fused"])
def test_bf16_weight_copies_train_bit_identically_to_autocast(
        compiled: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The bf16 copies written by the optimizer are autocast's casts, made elsewhere: with the
    same optimizer step (the fused one training uses, or the eager one) every loss and every
    weight is bit-identical to the autocast loop's (README, Performance)."""
    torch.manual_seed(0)
    # Conv2d, Linear and BatchNorm parameters; channels-last in both (tested apart above)
    ref = prepare_model(build_model(get_spec("CNN_MNIST_2")))
    fast = copy.deepcopy(ref)
    x, y = _batch(32)
    with warnings.catch_warnings():
        if compiled:  # in both loops
            _refuse_eager_adadelta(monkeypatch)
        ref_losses = _autocast_loop(ref, x, y, steps=4, compiled=compiled)
        step = make_train_step(fast, TrainConfig(precision="bf16"), compile_optimizer=compiled)
        fast_losses = [step(x, y)[0].item() for _ in range(4)]
    assert fast_losses == ref_losses
    for (n, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters(), strict=True):
        assert torch.equal(p_fast, p_ref), n
        assert p_fast.dtype == torch.float32  # the model keeps its fp32 weights
    state = step.optimizer.state[fast[0].weight]
    assert int(state["step"]) == 4 and state["square_avg"].abs().sum() > 0


def test_bf16_weight_copies_follow_a_model_loaded_before_the_first_step() -> None:
    """fit() restores a checkpoint after make_train_step: the copies must be taken later."""
    torch.manual_seed(0)
    model, other = build_model(get_spec("CNN_MNIST_1")), build_model(get_spec("CNN_MNIST_1"))
    step = make_train_step(model, TrainConfig(precision="bf16"), compile_optimizer=False)
    model.load_state_dict(other.state_dict())
    x, y = _batch(16)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = clipped_categorical_crossentropy(other.eval()(x), y).item()
    model.eval()  # no dropout: the step's loss is then the loaded model's
    assert step(x, y)[0].item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.slow
def test_bf16_evaluation_stays_close_to_fp32(mnist) -> None:
    """cnnbench's bf16 inference (``evaluate(precision="bf16")``) against its fp32 one."""
    torch.manual_seed(0)
    model = build_model(get_spec("CNN_MNIST_1"))
    x, y = images_to_tensor(mnist.x_test[:500]), labels_to_tensor(mnist.y_test[:500])
    loss32, acc32, pred32 = evaluate(model, x, y, precision="fp32")
    loss16, acc16, pred16 = evaluate(model, x, y, precision="bf16")
    # bf16 keeps 8 bits of mantissa: the loss agrees to about 1e-3, the classes almost all.
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    assert (pred16 == pred32).mean() >= 0.95
    assert abs(acc16 - acc32) <= 0.05


@pytest.mark.slow
def test_bf16_training_steps_follow_fp32_within_a_twentieth_of_its_decrease(mnist) -> None:
    """Five of cnnbench's own bf16 steps (fused optimizer, bf16 weight copies) on 128 real
    images: measured 0.0122 apart from fp32 at most, while fp32 fell by 0.735."""
    x, y = images_to_tensor(mnist.x_train[:128]), labels_to_tensor(mnist.y_train[:128])
    losses = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = build_model(get_spec("CNN_MNIST_1"))
        step = make_train_step(model, TrainConfig(precision=precision))
        torch.manual_seed(1)  # the same dropout masks for both
        losses[precision] = [step(x, y)[0].item() for _ in range(5)]
    fp32, bf16 = losses["fp32"], losses["bf16"]
    decrease = fp32[0] - fp32[-1]
    assert decrease > 0.5  # real learning, far from chance's flat 2.30
    assert max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)) < 0.05 * decrease
    assert bf16[0] - bf16[-1] == pytest.approx(decrease, rel=0.05)


def test_auto_precision_follows_the_cpus_bf16_units_and_explicit_choice_wins(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: False)
    assert resolve_precision("auto", cpu) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"  # asked for: given, units or not
    monkeypatch.setattr(precision_module, "cpu_has_bf16", lambda: True)
    assert resolve_precision("auto", cpu) == "bf16"
    assert resolve_precision("fp32", cpu) == "fp32"
    assert resolve_precision("fp32", torch.device("cuda")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp16")


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_batchnorm_on_channels_last_input_matches_nchw(precision: str) -> None:
    """cnnbench's BatchNorm2d computes on NCHW whatever comes in: same outputs, gradients,
    running statistics as torch's on the channels-last tensor."""
    from cnnbench.model.build import BatchNorm2d

    torch.manual_seed(0)
    ours, ref = BatchNorm2d(8, eps=1e-3, momentum=0.01), torch.nn.BatchNorm2d(8, 1e-3, 0.01)
    x = (torch.randn(16, 8, 5, 5) * 3 + 1).contiguous(memory_format=torch.channels_last)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        outs = [ours(xs[0]), ref(xs[1])]
    tol = {"rtol": 2e-2, "atol": 2e-2} if precision == "bf16" else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(outs[0], outs[1], **tol)
    g = torch.randn(16, 8, 5, 5)
    for o in outs:
        o.float().backward(g)
    torch.testing.assert_close(xs[0].grad, xs[1].grad, **tol)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, **tol)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    torch.testing.assert_close(ours.running_var, ref.running_var)


@pytest.mark.parametrize("bias", [True, False])
def test_dense_through_onednn_is_fp32_arithmetic_and_the_op_that_runs(bias: bool) -> None:
    """cnnbench's Linear in fp32 on the CPU: oneDNN's matmul, forward and both gradients
    within fp32 rounding of a float64 reference (a bf16 or TF32 downcast inside would miss
    this by 100x), and under bf16 autocast the autocast path (a bf16 result)."""
    from torch.profiler import ProfilerActivity, profile

    from cnnbench.model.build import Linear

    torch.manual_seed(0)
    ours = Linear(700, 90, bias=bias)
    ref = torch.nn.Linear(700, 90, bias=bias).double()
    ref.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    x = torch.randn(33, 700)
    g = torch.randn(33, 90)
    xs = [x.clone().requires_grad_(), x.double().requires_grad_()]
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = ours(xs[0])
        out.backward(g)
    names = [e.key for e in prof.key_averages()]
    assert "mkldnn::_linear_pointwise" in names and "aten::addmm" not in names, names
    ref(xs[1]).backward(g.double())

    def rel(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a.double() - b).abs().max() / b.abs().max()).item()

    assert out.dtype == torch.float32
    assert rel(out, ref(xs[1])) < 5e-6
    assert rel(xs[0].grad, xs[1].grad) < 5e-6
    assert rel(ours.weight.grad, ref.weight.grad) < 5e-6
    if bias:
        assert rel(ours.bias.grad, ref.bias.grad) < 5e-6
    else:
        assert ours.bias is None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert ours(x).dtype == torch.bfloat16
    graph = str(torch.jit.trace(ours, x).graph)  # exports hold the portable op
    assert "aten::linear" in graph and "mkldnn" not in graph, graph


def test_relu_on_channels_last_input_is_torchs_relu_bit_for_bit() -> None:
    """cnnbench's ReLU computes channels-last input on its flat NHWC view: the same values,
    the same gradient, the same layout out as torch's."""
    from cnnbench.model.build import ReLU

    torch.manual_seed(0)
    x = torch.randn(4, 6, 5, 3).contiguous(memory_format=torch.channels_last)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    outs = [ReLU()(xs[0]), torch.relu(xs[1])]
    assert torch.equal(outs[0], outs[1])
    assert outs[0].is_contiguous(memory_format=torch.channels_last)
    g = torch.randn(4, 6, 5, 3)  # NCHW: the gradient may come in another layout
    for o in outs:
        o.backward(g)
    assert torch.equal(xs[0].grad, xs[1].grad)
    y = torch.randn(3, 7)
    assert torch.equal(ReLU()(y), torch.relu(y))


def test_freed_memory_stays_with_the_process_for_the_next_step() -> None:
    """After keep_freed_memory, a 24 MB tensor comes from the heap (no mmap of its own) and
    its memory stays in the heap when freed, so the next step reuses it without page faults.
    In a fresh process: glibc's defaults would mmap the first such block."""
    import subprocess
    import sys

    code = r"""
import ctypes, torch
from cnnbench.train.fastpath import keep_freed_memory
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks "
                                              "fsmblks uordblks fordblks keepcost".split()]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
assert keep_freed_memory()
t = torch.empty(6 * 1024 * 1024)  # 24 MB
during = libc.mallinfo2()
del t
after = libc.mallinfo2()
print(during.hblkhd, during.arena, after.arena)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    mmapped, arena_during, arena_after = map(int, out.stdout.split())
    assert mmapped < 24 * 2 ** 20 <= arena_during
    assert arena_after >= 24 * 2 ** 20
