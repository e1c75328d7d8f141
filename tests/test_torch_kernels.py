"""bart_torch.kernels: the swapped-in linear kernels give plain nn.Linear's numbers, in inference and training."""

import os

os.environ.setdefault("USE_TF", "0")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import bart_torch  # noqa: E402
from bart_torch import kernels  # noqa: E402
from bart_torch.kernels import OneDNNLinear  # noqa: E402
from bart_torch.modeling import ACT2FN  # noqa: E402
from tests.conftest import seeded_inputs, tiny_config  # noqa: E402

needs_onednn = pytest.mark.skipif(not kernels.onednn_available(), reason="torch built without oneDNN")


def _layer(in_features: int, out_features: int, kernel: str, activation=None, bias: bool = True) -> nn.Module:
    torch.manual_seed(0)
    parent = nn.Module()
    parent.fc1 = nn.Linear(in_features, out_features, bias=bias)
    if bias:
        parent.fc1.bias.data.normal_()
    parent.activation_fn = activation if activation is not None else nn.Identity()
    return kernels.use(parent, kernel)


@needs_onednn
@pytest.mark.parametrize("kernel", ["onednn", "auto"])
@pytest.mark.parametrize("rows,out_features", [(1, 96), (16, 96), (4, 9000), (300, 700)])
def test_swapped_linear_equals_f_linear_in_inference(kernel, rows, out_features):
    layer = _layer(1024, out_features, kernel)
    assert isinstance(layer.fc1, OneDNNLinear) and layer.fc1.kernel == kernel
    x = torch.randn(rows, 1024)
    with torch.no_grad():
        want = F.linear(x, layer.fc1.weight, layer.fc1.bias)
        np.testing.assert_allclose(layer.fc1(x).numpy(), want.numpy(), atol=1e-5, rtol=1e-5)
        x3 = x.view(1, rows, 1024)  # (B, T, in) as the network calls it
        np.testing.assert_allclose(layer.fc1(x3).numpy(), want[None].numpy(), atol=1e-5, rtol=1e-5)


@needs_onednn
@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "relu", "silu", "tanh"])
def test_fused_activation_equals_activation_after_f_linear(activation):
    """fc1's activation moves into the oneDNN product (the parent's becomes Identity) and gives the same numbers;
    with autograd it runs after the product; "aten" puts the parent's activation back."""
    layer = _layer(256, 512, "onednn", ACT2FN[activation])
    assert layer.fc1.activation is ACT2FN[activation] and isinstance(layer.activation_fn, nn.Identity)
    x = torch.randn(40, 256)
    want = ACT2FN[activation](F.linear(x, layer.fc1.weight, layer.fc1.bias)).detach()
    with torch.no_grad():
        np.testing.assert_allclose(layer.activation_fn(layer.fc1(x)).numpy(), want.numpy(), atol=1e-5, rtol=1e-5)
    trained = layer.fc1(x)
    assert trained.requires_grad
    np.testing.assert_allclose(trained.detach().numpy(), want.numpy(), atol=1e-5, rtol=1e-5)
    kernels.use(layer, "aten")
    assert type(layer.fc1) is nn.Linear and layer.activation_fn is ACT2FN[activation]


@needs_onednn
@pytest.mark.parametrize("kernel", ["onednn", "auto"])
@pytest.mark.parametrize("frozen_weight", [False, True])
def test_swapped_linear_gradients_equal_f_linear(kernel, frozen_weight):
    """Training: the oneDNN forward and backward products give F.linear's gradients, 3-D input included."""
    layer = _layer(96, 200, kernel, nn.GELU())
    fc1 = layer.fc1
    fc1.weight.requires_grad_(not frozen_weight)
    x = torch.randn(3, 50, 96, requires_grad=True)
    upstream = torch.randn(3, 50, 200)
    grads = []
    for fn in (lambda: layer.activation_fn(fc1(x)), lambda: F.gelu(F.linear(x, fc1.weight, fc1.bias))):
        x.grad = fc1.weight.grad = fc1.bias.grad = None
        (fn() * upstream).sum().backward()
        grads.append([x.grad.clone(), None if frozen_weight else fc1.weight.grad.clone(), fc1.bias.grad.clone()])
    for ours, ref in zip(*grads):
        if ref is None:
            assert ours is None
        else:
            np.testing.assert_allclose(ours.numpy(), ref.numpy(), atol=1e-4, rtol=1e-5)


@needs_onednn
def test_onednn_product_function_gradients_equal_f_linear():
    """``OneDNNProduct`` itself (what "auto" may pick under autograd) against F.linear."""
    torch.manual_seed(0)
    w = torch.randn(70, 33, requires_grad=True)
    b = torch.randn(70, requires_grad=True)
    x = torch.randn(2, 9, 33, requires_grad=True)
    g = torch.randn(2, 9, 70)
    got = torch.autograd.grad((kernels.OneDNNProduct.apply(x, w, b) * g).sum(), (x, w, b))
    want = torch.autograd.grad((F.linear(x, w, b) * g).sum(), (x, w, b))
    for a, e in zip(got, want):
        np.testing.assert_allclose(a.numpy(), e.numpy(), atol=1e-4, rtol=1e-5)


def test_auto_records_one_measured_choice_per_shape_class():
    kernels.forget_choices()
    layer = _layer(64, 48, "auto")
    with torch.no_grad():
        layer.fc1(torch.randn(5, 64))
        layer.fc1(torch.randn(7, 64))  # rows 5 and 7 fall in the same class (rounded up to 8)
        layer.double().fc1(torch.randn(1, 64).double())  # float64: F.linear, not measured
    made = kernels.choices()
    if not kernels.onednn_available():
        assert made == {}
        return
    key = ("inference", "float32", 8, 64, 48, True, "none", torch.get_num_threads())
    assert list(made) == [key]
    kernel, t_onednn, t_aten = made[key]
    assert kernel in ("onednn", "aten") and t_onednn > 0 and t_aten > 0


def _seq2seq(kernel: str):
    torch.manual_seed(0)
    model = bart_torch.BartForConditionalGeneration(tiny_config())
    return kernels.use(model, kernel)


def test_model_swap_keeps_state_dict_and_tied_head():
    model = _seq2seq("aten")
    keys = list(model.state_dict())
    assert not any(isinstance(m, OneDNNLinear) for m in model.modules())
    kernels.use(model, "onednn")
    assert list(model.state_dict()) == keys
    assert model.lm_head.weight is model.model.shared.weight
    assert kernels.kernel_of(model) == "onednn"
    assert kernels.kernel_of(bart_torch.BartModel(tiny_config())) == "auto"  # what a built model gets


@needs_onednn
def test_model_outputs_and_gradients_equal_across_kernels():
    """The whole network: logits in eval (1e-5) and every parameter's gradient in training agree between oneDNN
    layers and plain nn.Linear."""
    c = tiny_config()
    x = {k: torch.as_tensor(v) for k, v in seeded_inputs(c, batch=3, src_len=9).items()}
    labels = x["decoder_input_ids"].clone()
    runs = []
    for kernel in ("onednn", "aten"):
        model = _seq2seq(kernel).eval()
        with torch.no_grad():
            logits = model(**x).logits
        model.train()
        torch.manual_seed(1)  # the same dropout masks
        model(**x, labels=labels).loss.backward()
        runs.append((logits, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (l1, g1), (l2, g2) = runs
    np.testing.assert_allclose(l1.numpy(), l2.numpy(), atol=1e-5, rtol=0)
    assert g1.keys() == g2.keys()
    for name in g1:
        np.testing.assert_allclose(g1[name].numpy(), g2[name].numpy(), atol=1e-5, rtol=1e-4, err_msg=name)


def test_bfloat16_model_runs_swapped_layers_and_agrees_with_float32():
    """A bfloat16 model (what ``from_pretrained(torch_dtype=torch.bfloat16)`` gives) keeps float32 where the
    network asks for it and agrees with float32 on most teacher-forced top-1 tokens."""
    c = tiny_config()
    x = {k: torch.as_tensor(v) for k, v in seeded_inputs(c, batch=3, src_len=9).items()}
    model = _seq2seq("auto").eval()
    with torch.no_grad():
        want = model(**x).logits.argmax(-1)
        model.to(torch.bfloat16)
        got = model(**x).logits
    assert got.dtype == torch.bfloat16 and kernels.kernel_of(model) == "auto"
    assert float((got.argmax(-1) == want).float().mean()) >= 0.9
    out = model.generate(x["input_ids"], x["attention_mask"], max_new_tokens=4, return_dict_in_generate=True,
                         output_scores=True)
    assert out.scores[0].dtype == torch.float32  # logits processors and scores run in float32


def test_threads_for_load_lowers_threads_only_while_cores_are_taken(monkeypatch):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(kernels, "_others_running", lambda: 64)  # every core held by others
        with kernels.threads_for_load() as n:
            assert n == torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), kernels.threads_for_load():  # restored on error too
            raise RuntimeError
        assert torch.get_num_threads() == 2
        with kernels.threads_for_load(enabled=False) as n:
            assert n == torch.get_num_threads() == 2
        monkeypatch.setattr(kernels, "_others_running", lambda: 0)  # idle machine
        with kernels.threads_for_load() as n:
            assert n == 2
    finally:
        torch.set_num_threads(before)
