"""构建模型与三种迁移学习策略。

- ``freeze``（特征提取）：加载预训练权重，冻结主干网络，只训练新换上的分类头；
- ``finetune``（微调）：加载预训练权重，全部层都训练，分类头的学习率比主干大；
- ``scratch``（从头训练）：随机初始化，结构相同，全部层都训练。

“冻结”在这里有两层意思，缺一不可：

1. 主干的参数 ``requires_grad_(False)``：反向传播不经过主干，只算分类头的梯度，省下大部分计算；
2. 主干保持评估模式（eval），即使调用了 ``model.train()``：BatchNorm 继续用预训练时的
   均值和方差，不会被新数据悄悄改写（冻结部分里的 Dropout 也不再随机丢弃）。

只让优化器跳过主干、却不做这两点，是原教程的错误：梯度照样算遍全网，BatchNorm 的统计量照样在变。
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import io
import os
import pickle
import socket
import types
import urllib.error
from pathlib import Path

from .paths import display_path

__all__ = [
    "STRATEGIES", "STRATEGY_NAMES", "check_strategy", "build_model", "WeightsUnavailable",
    "head_module", "freeze_backbone", "make_optimizer", "count_params", "trainable_summary",
    "weights_cache_path", "eval_mode",
]

STRATEGIES = ("freeze", "finetune", "scratch")

STRATEGY_NAMES = {
    "freeze": "冻结主干，只训练分类头",
    "finetune": "微调全部层",
    "scratch": "从头训练",
}

# 下载权重时每次网络读写的超时（秒）：防火墙静默丢包时不会无限等待
DOWNLOAD_TIMEOUT_S = 30

# 拿不到权重时只捕获网络与文件错误；其他错误（比如代码写错）照常抛出
NETWORK_ERRORS = (urllib.error.URLError, OSError, http.client.HTTPException)
# 缓存或本地权重文件损坏、不是这个模型的权重时 torch.load / load_state_dict 抛出的错误
BAD_FILE_ERRORS = (pickle.UnpicklingError, EOFError, RuntimeError, KeyError)


# 必须有权重却拿不到时，追加在说明最后的一条出路
OFFLINE_HINT = "完全离线、只想先把课程跑通的话，改用 demo 档位（PROFILE = \"demo\"）：拿不到权重会退回随机初始化，并明确提示。"


class WeightsUnavailable(RuntimeError):
    """需要预训练权重却拿不到（离线、缓存里没有、本地文件不存在或不对）。"""


def build_model(
    arch: str = "resnet18",
    num_classes: int = 30,
    strategy: str = "freeze",
    weights=None,
    weights_required: bool = False,
):
    """按迁移策略构建 torchvision 模型，并把分类头换成 ``num_classes`` 类的新线性层。

    参数：
        arch：torchvision 的模型名，如 "resnet18"、"resnet50"、"mobilenet_v3_small"、"efficientnet_b0"。
        num_classes：新任务的类别数。
        strategy："freeze" | "finetune" | "scratch"。scratch 永远不加载预训练权重。
        weights：torchvision 权重名（"IMAGENET1K_V1"、"DEFAULT"）、本地权重文件路径，或 None（随机初始化）。
        weights_required：True 时拿不到预训练权重就抛出 WeightsUnavailable；
            False 时退回随机初始化，并打印一段醒目的提示。加载成功时打印一句权重的来源；
            weights 为 None 或策略为 scratch 时什么也不打印（随机初始化是有意的）。
    返回：
        nn.Module。``model.course_info`` 记录实际情况：arch、strategy、num_classes、head（分类头的名字）、
        weights（真正加载的权重名或文件路径；没加载为 None）、weights_note（一句中文说明）。
    """
    strategy = check_strategy(strategy)
    if strategy == "scratch" or weights is None:
        model, info = _random_model(arch), _random_info(strategy)
    else:
        model, info = _pretrained_model(arch, weights, weights_required, strategy)
        if info["weights"] is not None:
            print(info["weights_note"])
    head_name = _replace_head(model, num_classes)
    model.course_info = {"arch": arch, "strategy": strategy, "num_classes": int(num_classes),
                         "head": head_name, **info}
    if strategy == "freeze":
        freeze_backbone(model)
    return model


def check_strategy(strategy: str) -> str:
    """检查策略名（不分大小写），返回规范写法 "freeze" / "finetune" / "scratch"；写错时用中文列出可选项。"""
    name = str(strategy).strip().lower()
    if name not in STRATEGIES:
        choices = "；".join(f"{key}（{text}）" for key, text in STRATEGY_NAMES.items())
        raise ValueError(f"未知的迁移策略 {strategy!r}。可选：{choices}。")
    return name


def _random_model(arch: str):
    from torchvision import models

    return models.get_model(arch, weights=None)


def _random_info(strategy: str) -> dict:
    if strategy == "scratch":
        note = "未使用预训练权重：scratch（从头训练）策略总是从随机初始化开始。"
    else:
        note = "未使用预训练权重：随机初始化（本次设置的 weights 为 None）。"
    return {"weights": None, "weights_note": note}


def _pretrained_model(arch: str, weights, weights_required: bool, strategy: str):
    """加载预训练权重；拿不到时按 weights_required 报错，或退回随机初始化并醒目提示。"""
    try:
        if _is_weights_name(arch, weights):
            return _load_torchvision_weights(arch, weights)
        return _load_local_weights(arch, Path(str(weights)).expanduser())
    except WeightsUnavailable as exc:
        if weights_required:  # full / quick 档位：停下来，说明怎样拿到权重，或者改用 demo 档位
            raise WeightsUnavailable(f"{exc}\n{OFFLINE_HINT}") from None
        note = f"未使用预训练权重：没能拿到 {getattr(weights, 'name', weights)}，已退回随机初始化。"
        _announce_fallback(note, str(exc), strategy)
        return _random_model(arch), {"weights": None, "weights_note": note}


def _is_weights_name(arch: str, weights) -> bool:
    """weights 是 torchvision 的权重名（或枚举）时返回 True，是文件路径时返回 False。"""
    from torchvision.models import WeightsEnum, get_model_weights

    if isinstance(weights, WeightsEnum):
        return True
    enum = get_model_weights(arch)
    names = set(enum.__members__)
    text = str(weights).removeprefix(f"{enum.__name__}.")  # 也接受 "ResNet18_Weights.IMAGENET1K_V1"
    if text in names:
        return True
    if not any(ch in text for ch in "/\\.") and not Path(text).exists():
        raise ValueError(
            f"{arch} 没有名为 {text!r} 的 torchvision 权重。可选：{', '.join(sorted(names))}；"
            "也可以给出本地权重文件的路径，或写 None 表示随机初始化。"
        )
    return False


def weights_cache_path(arch: str = "resnet18", weights: str = "IMAGENET1K_V1") -> Path:
    """torchvision 把某个权重缓存在哪里：``torch.hub.get_dir()/checkpoints/<文件名>``（由 TORCH_HOME 决定）。"""
    import torch
    from torchvision.models import get_model_weights

    enum = get_model_weights(arch).verify(weights)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(enum.url)


def _load_torchvision_weights(arch: str, weights):
    """用 torchvision 自己的机制取权重：先看 torch hub 缓存，没有就下载到缓存。"""
    from torchvision import models

    enum = models.get_model_weights(arch).verify(weights)
    cached = weights_cache_path(arch, enum.name)
    was_cached = cached.exists()
    try:
        # torch hub 开始下载前会打印一行 “Downloading: …”；离线时下载马上失败，这行字只会误导人，
        # 所以先收起来：成功时我们自己说明权重来自哪里，失败时由醒目的提示说明原因和办法
        with _socket_timeout(DOWNLOAD_TIMEOUT_S), contextlib.redirect_stdout(io.StringIO()):
            model = models.get_model(arch, weights=enum)
    except NETWORK_ERRORS as exc:  # 原因已写进中文说明；不再附上 urllib 的长篇回溯
        raise WeightsUnavailable(_unavailable_message(arch, enum, cached, exc)) from None
    except BAD_FILE_ERRORS as exc:
        if not was_cached:
            raise
        raise WeightsUnavailable(
            f"缓存里的权重文件 {cached} 已损坏或不是 {arch} 的权重（{exc}）。删掉这个文件后重新运行，"
            "torchvision 会重新下载。"
        ) from exc
    source = f"本机缓存 {cached}" if was_cached else f"{enum.url}，已缓存到 {cached}"
    return model, {"weights": enum.name, "weights_note": f"已加载{_describe(enum)}（{enum.name}，来自{source}）。"}


def _describe(enum) -> str:
    """权重的中文描述；只有 ImageNet 训练的权重才说 ImageNet。"""
    return " ImageNet 预训练权重" if enum.name.startswith("IMAGENET") else "预训练权重"


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


def _unavailable_message(arch: str, enum, cached: Path, exc: Exception) -> str:
    torch_home = os.environ.get("TORCH_HOME")
    home_text = f"当前 TORCH_HOME={torch_home}" if torch_home else "当前没有设置 TORCH_HOME，用的是默认位置"
    return (
        f"拿不到 {arch} 的预训练权重 {enum.name}（原因：{exc}）。\n"
        f"torchvision 会在缓存 {cached} 里找它，没有就从 {enum.url} 下载。解决办法，任选其一：\n"
        f"  1. 联网后重新运行，权重会自动下载到上面的缓存位置；\n"
        f"  2. 在能上网的机器上下载 {enum.url}，把文件原名放到 {cached.parent}/"
        f"（缓存目录由环境变量 TORCH_HOME 决定，{home_text}）；\n"
        f"  3. 把权重文件的本地路径交给课程：在 04 笔记本的 parameters 单元格里写 WEIGHTS = \"路径/{cached.name}\"。"
    )


def _load_local_weights(arch: str, path: Path):
    """从本地文件加载预训练权重（一个 state_dict，例如 torchvision 下载的 resnet18-f37072fd.pth）。"""
    import torch

    if not path.is_file():
        raise WeightsUnavailable(
            f"找不到本地权重文件 {display_path(path)}。检查路径是否写对；也可以改用权重名（如 \"IMAGENET1K_V1\"），"
            "让 torchvision 从缓存或网络获取。"
        )
    model = _random_model(arch)
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state_dict)
    except BAD_FILE_ERRORS as exc:
        raise WeightsUnavailable(
            f"本地文件 {display_path(path)} 不是 {arch} 的预训练权重（{str(exc)[:300]}）。它应该是 {arch}.state_dict() "
            "保存成的文件（原始 1000 类的结构），例如 torchvision 下载的权重文件。"
        ) from exc
    enum = _match_official_file(arch, path)
    what = f"{_describe(enum)}（{enum.name}，文件校验和与官方一致）" if enum else "预训练权重（来源无法核实）"
    return model, {"weights": str(path), "weights_note": f"已加载{what}，来自本地文件 {display_path(path)}。"}


def _match_official_file(arch: str, path: Path):
    """本地文件的 SHA-256 前缀与 torchvision 官方权重文件名里的校验和一致时，返回那个权重枚举。"""
    from torchvision.models import get_model_weights

    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    for enum in get_model_weights(arch):
        expected = os.path.basename(enum.url).rsplit("-", 1)[-1].split(".")[0]
        if len(expected) >= 8 and digest.startswith(expected):
            return enum
    return None


# 没拿到预训练权重时，各策略实际上变成了什么
FALLBACK_EFFECTS = {
    "freeze": "freeze 冻结的是一个随机网络，只有分类头在学随机特征，准确率会很低",
    "finetune": "此时 finetune 等同于从头训练（只是主干学习率更小）",
}


def _announce_fallback(note: str, reason: str, strategy: str) -> None:
    """打印一段醒目的提示（只此一段）：没拿到预训练权重、为什么、怎么办、对这次结果意味着什么。"""
    line = "=" * 72
    effect = FALLBACK_EFFECTS.get(strategy, "模型从随机初始化开始训练")
    print(f"{line}\n【注意】{note}\n{reason}\n影响：{effect}；这次的结果不代表迁移学习的效果。\n{line}", flush=True)


def _replace_head(model, num_classes: int) -> str:
    """把最后的线性层换成 num_classes 类的新线性层，返回它的名字（如 "fc"、"classifier.3"）。"""
    from torch import nn

    name = _find_head_name(model)
    parent_name, _, child_name = name.rpartition(".")
    parent = model.get_submodule(parent_name)
    old = getattr(parent, child_name)
    setattr(parent, child_name, nn.Linear(old.in_features, num_classes))
    return name


def _find_head_name(model) -> str:
    from torch import nn

    for name in ("fc", "classifier", "heads"):
        module = getattr(model, name, None)
        if isinstance(module, nn.Linear):
            return name
        if isinstance(module, nn.Sequential):
            last_name, last = list(module.named_children())[-1]
            if isinstance(last, nn.Linear):
                return f"{name}.{last_name}"
    raise ValueError(f"{type(model).__name__} 找不到最后的线性分类层（fc / classifier / heads），课程暂不支持这种结构。")


def head_module(model):
    """模型的分类头（resnet 是 ``model.fc``，mobilenet/efficientnet 是 ``model.classifier[-1]``）。"""
    info = getattr(model, "course_info", None) or {}
    return model.get_submodule(info.get("head") or _find_head_name(model))


def freeze_backbone(model):
    """冻结主干：参数不求梯度，并且冻结的部分永远处于评估模式（eval）；只有分类头训练。

    ``model.train()`` 被换成一个小小的替身：先照常切换模式，再把没有任何要训练参数的模块切回 eval。
    这样 BatchNorm 的 running_mean / running_var 不会在训练时被改写。之后如果你解冻了一部分主干
    （例如 ``model.layer4.requires_grad_(True)``），那一部分会自动跟着训练，包括它的 BatchNorm。
    返回同一个 model。
    """
    model.requires_grad_(False)
    head_module(model).requires_grad_(True)
    model.train = types.MethodType(_train_keeping_frozen_parts_in_eval, model)
    model.train(model.training)  # 立即生效
    return model


def _train_keeping_frozen_parts_in_eval(self, mode: bool = True):
    type(self).train(self, mode)  # 先照常切换：所有层进入 mode
    if mode:
        _frozen_parts_to_eval(self)
    return self


def _frozen_parts_to_eval(module) -> None:
    """从上往下看：整块都没有要训练的参数（全部冻结，或像 ReLU 那样本来就没有参数）就切到 eval；
    只冻结了一部分的模块，再往里一层看。"""
    for child in module.children():
        if not any(p.requires_grad for p in child.parameters()):
            child.eval()
        else:
            _frozen_parts_to_eval(child)


@contextlib.contextmanager
def eval_mode(model):
    """暂时把模型切到评估模式（BatchNorm 用已有的统计量、Dropout 不丢弃），离开时逐层恢复原来的模式。

    不能离开时简单地整体 ``model.train()``：freeze 模型里冻结的部分本来就一直处于 eval。
    """
    modes = {module: module.training for module in model.modules()}
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes.items():
            module.training = training


def make_optimizer(model, strategy: str, lr: float, *, backbone_lr_scale: float = 0.1, weight_decay: float = 0.0):
    """按策略创建 Adam 优化器（参数组带 "name"："head" / "backbone"）。

    - freeze：只优化分类头；
    - finetune：主干学习率 = lr × backbone_lr_scale（默认十分之一），分类头用 lr——
      主干已经学到了好特征，小步调整，避免一开始就被随机的新分类头带偏；
    - scratch：所有层都用 lr（没有预训练特征需要保护）。
    """
    import torch

    strategy = check_strategy(strategy)
    head_params = list(head_module(model).parameters())
    head_ids = {id(p) for p in head_params}
    backbone_params = [p for p in model.parameters() if id(p) not in head_ids and p.requires_grad]
    if strategy == "freeze":
        if backbone_params:
            raise ValueError(
                "strategy 为 freeze，但模型的主干有参数要训练。用 cu.build_model(..., strategy=\"freeze\") 构建模型；"
                "如果你有意解冻了一部分主干（例如 layer4），用 strategy=\"finetune\" 创建优化器，解冻的部分用较小的学习率。"
            )
        groups = [{"params": head_params, "lr": lr, "name": "head"}]
    else:
        scale = backbone_lr_scale if strategy == "finetune" else 1.0
        groups = [{"params": backbone_params, "lr": lr * scale, "name": "backbone"},
                  {"params": head_params, "lr": lr, "name": "head"}]
    return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay)


def count_params(model) -> dict:
    """参数个数：{"total": 全部, "trainable": 需要训练的, "frozen": 冻结的}。"""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable, "frozen": total - trainable}


def trainable_summary(model):
    """按顶层模块统计参数量和是否训练，返回 pandas 表格（最后一行是合计）。没有参数的模块不列出。"""
    import pandas as pd

    rows = []
    for name, block in model.named_children():
        counts = count_params(block)
        if counts["total"]:
            rows.append({"模块": name, "参数量": counts["total"], "可训练参数量": counts["trainable"],
                         "状态": _state_text(counts)})
    counts = count_params(model)
    rows.append({"模块": "合计", "参数量": counts["total"], "可训练参数量": counts["trainable"],
                 "状态": f"可训练 {counts['trainable'] / counts['total']:.2%}"})
    return pd.DataFrame(rows).set_index("模块")


def _state_text(counts: dict) -> str:
    if counts["trainable"] == counts["total"]:
        return "训练"
    return "冻结" if counts["trainable"] == 0 else "部分训练"
