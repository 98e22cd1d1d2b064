"""QAT layers (``QConv2d``, ``QLinear``, ``quantize_model``), deploy layers that call ``torch.ops.cmn.*``,
and ``convert`` from the first to the second (with save / load of deploy models)."""

from .convert import choose_kernel, compare, convert, load_deploy, save_deploy
from .deploy import DEPLOY_LAYERS, APoTConv2d, BinaryConv2d, DeployLayer, Int8Conv2d
from .engine import DeployEngine, build_engine, source_of
from .qat import EDGE_PRESETS, QLAYERS, QConv2d, QLinear, layer_names, qlayers, quantize_model

__all__ = ["APoTConv2d", "BinaryConv2d", "DEPLOY_LAYERS", "DeployEngine", "DeployLayer", "EDGE_PRESETS",
           "Int8Conv2d", "QConv2d", "QLAYERS", "QLinear", "build_engine", "choose_kernel", "compare", "convert",
           "layer_names", "load_deploy", "qlayers", "quantize_model", "save_deploy", "source_of"]
