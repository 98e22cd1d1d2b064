"""The deploy engine (cmn_ext.nn.engine): converted ResNets as one integer-domain graph of kernel calls.

Checked on ResNet-20 for every scheme: nothing between two quantized layers is re-quantized in float (the
graph is walked), a basic block is two kernel calls with the residual and ReLU fused, predictions agree
with the QAT model, the graph compiles with torch.compile(fullgraph=True) and exports with torch.export
(equal outputs), saves and loads, and micro-batching does not change results. CUDA graph capture is tested
where a GPU is present.
"""

import operator
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import requires_cuda
from test_convert import SPECS, _settle

from cmn_ext.models import build_model
from cmn_ext.nn import DeployEngine, convert, load_deploy, quantize_model, save_deploy
from cmn_ext.nn.engine import quantize_to_codes
from cmn_ext.prune import Pruner, remove_pruned_filters

SCHEMES = {
    "binary01": SPECS["binary01"],
    "binarypm1": SPECS["binarypm1"],
    "int8": {"weight": {"kind": "linear", "bits": 8}, "act": {"kind": "linear", "bits": 8}, "first": "8bit",
             "last": "8bit"},
    "dorefa4": SPECS["dorefa4"],
    "apot": SPECS["apot"],
}
KERNEL_OPS = {torch.ops.cmn.binary_conv2d.default, torch.ops.cmn.int8_conv2d.default,
              torch.ops.cmn.apot_conv2d.default, torch.ops.cmn.apot_matmul.default}


def _qat(scheme, depth=20, pruned=None):
    model = quantize_model(build_model(f"resnet{depth}"), SCHEMES[scheme])
    if pruned:
        Pruner(model, "fpgm", 0.5, exclude=["first"]).prune_to(0.5)
        if pruned == "physical":
            remove_pruned_filters(model)
    return _settle(model, (3, 32, 32), steps=2)


def _kernel_nodes(engine):
    return [n for n in engine.program.graph.nodes if n.op == "call_function" and n.target in KERNEL_OPS]


def _produced_by_kernel(node):
    """The node is a kernel call, or the float_out buffer a kernel call filled."""
    if node.op == "call_function" and node.target in KERNEL_OPS:
        return True
    return any(u.op == "call_function" and u.target in KERNEL_OPS and u.kwargs.get("float_out") is node
               for u in node.users)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_no_float_requantization_between_quantized_layers(scheme):
    engine, report = convert(_qat(scheme))
    assert isinstance(engine, DeployEngine)
    converted = [r for r in report if r["kernel"]]
    kernels = _kernel_nodes(engine)
    assert len(kernels) == len(converted)  # one call per converted layer: nothing else computes them
    graph = engine.program.graph
    for node in graph.nodes:
        if node.op == "call_function" and node.target is quantize_to_codes:
            # float -> codes only where the network is float: never on a kernel's output
            assert not _produced_by_kernel(node.args[0]), node.format_node()
    blocks = [n for n, _ in engine.net.named_modules() if n.count(".") == 1 and n.startswith("layer")]
    quantized_blocks = sum(1 for r in converted if r["layer"].endswith("conv2") and "layer" in r["layer"])
    if quantized_blocks == len(blocks):  # every block on the kernels: residual adds and ReLUs are all fused
        assert not [n for n in graph.nodes if n.op == "call_function" and n.target in (operator.add, torch.add)]
        relus = [n for n in graph.nodes if n.op == "call_function" and n.target in (F.relu, torch.relu)]
        assert len(relus) <= 1  # at most the full-precision first layer's
        fused = [n for n in kernels if n.kwargs.get("residual") is not None]
        assert len(fused) == len(blocks) and all(n.kwargs.get("relu") for n in fused)
    # every kernel's input comes from another kernel, or from one boundary quantization of a float value
    for node in kernels:
        src = node.args[0]
        assert _produced_by_kernel(src) or (src.op == "call_function" and src.target is quantize_to_codes)


@pytest.mark.parametrize("scheme", list(SCHEMES))
def test_engine_agrees_with_the_qat_model(scheme):
    qat = _qat(scheme)
    engine, _ = convert(qat)
    x = torch.randn(96, 3, 32, 32)
    with torch.no_grad():
        a, b, c = qat(x), engine(x), engine.net(x)
    agree = float((a.argmax(1) == b.argmax(1)).double().mean())
    assert agree >= 0.98, agree  # codes may differ by one step where an activation sits on a rounding edge
    assert (a - b).abs().max() <= 0.05 * a.abs().max()
    # the layer-wise form (each layer quantizing its float input itself) agrees as closely; DoReFa activations
    # are quantized as y / (1/n) in the epilogue and clamp(y, 0, 1) * n in the layer: rarely one step apart
    assert (b - c).abs().max() <= (0.05 if scheme == "dorefa4" else 1e-4) * c.abs().max()


@pytest.mark.parametrize("pruned", ["masked", "physical"])
def test_pruned_int8_engine(pruned):
    qat = _qat("int8", pruned=pruned)
    engine, _ = convert(qat)
    masked = [n for n in _kernel_nodes(engine) if n.args[5] is not None] if pruned == "masked" else []
    if pruned == "masked":
        assert masked  # keep masks reach the kernels, which compute only the kept filters
    x = torch.randn(32, 3, 32, 32)
    with torch.no_grad():
        assert float((qat(x).argmax(1) == engine(x).argmax(1)).double().mean()) >= 0.95


@pytest.mark.parametrize("scheme", ["binary01", "int8", "int8_masked", "apot"])
def test_engine_compiles_and_exports(scheme):
    masked = scheme == "int8_masked"
    engine, _ = convert(_qat("int8" if masked else scheme, depth=8, pruned="masked" if masked else None))
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        eager = engine(x)
        compiled = torch.compile(engine, fullgraph=True, backend="aot_eager")(x)
        exported = torch.export.export(engine, (x,)).module()(x)
    assert torch.equal(compiled, eager) and torch.equal(exported, eager)


@pytest.mark.parametrize("scheme", ["binary01", "int8", "apot"])
def test_engine_saves_and_loads(tmp_path, scheme):
    engine, _ = convert(_qat(scheme, depth=8))
    path = tmp_path / "deploy.pt"
    save_deploy(engine, str(path), {"model": "resnet8", "num_classes": 10, "quant": SCHEMES[scheme]})
    again = load_deploy(str(path))
    assert isinstance(again, DeployEngine)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), engine(x))
    assert isinstance(load_deploy(str(path), engine=False), type(engine.net))


def test_micro_batches_do_not_change_results():
    engine, _ = convert(_qat("int8", depth=8))  # 8-bit edges: every layer on the kernels, exact per image
    x = torch.randn(11, 3, 32, 32)
    with torch.no_grad():
        whole = engine.program(x)
        engine.micro_batch = 3
        split = engine(x)
    assert torch.equal(whole, split)


def test_engine_failure_falls_back_to_the_layer_wise_model(monkeypatch):
    convert_mod = sys.modules["cmn_ext.nn.convert"]  # the module (cmn_ext.nn.convert is the function)

    def broken(_):
        raise RuntimeError("no engine for this one")

    monkeypatch.setattr(convert_mod, "build_engine", broken)
    with pytest.warns(UserWarning, match="could not trace CifarResNet .no engine for this one."):
        deploy, _ = convert(_qat("int8", depth=8))
    assert not isinstance(deploy, DeployEngine)
    with torch.no_grad():
        assert deploy(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@requires_cuda
@pytest.mark.parametrize("scheme", ["binary01", "int8", "apot"])
def test_engine_cuda_graph_capture(scheme):
    """No op synchronises with the host: the whole CUDA deploy model is captured in a CUDA graph and replayed."""
    engine, _ = convert(_qat(scheme, depth=8))
    engine = engine.cuda()
    x = torch.randn(16, 3, 32, 32, device="cuda")
    with torch.no_grad():
        eager = engine(x)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            engine(x)  # warm-up on the side stream, as CUDA graphs require
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        static_x = x.clone()
        with torch.cuda.graph(graph):
            static_y = engine(static_x)
        static_x.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
    assert torch.equal(static_y, eager)
    cpu = engine.cpu()
    with torch.no_grad():
        assert (cpu(x.cpu()).argmax(1) == eager.cpu().argmax(1)).double().mean() >= 0.98


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
