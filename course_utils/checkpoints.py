"""检查点与指标文件：存在哪里、存什么、怎样安全地写和读。

检查点只存 ``state_dict`` 和普通类型的元数据，所以能用 ``torch.load(..., weights_only=True)`` 安全地加载；先写临时文件
再改名，中途出错不会留下半个文件，也不会毁掉上一次的检查点。指标是 UTF-8 的 JSON，05 和 06 从这里读取。
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import platform
import tempfile
from pathlib import Path

from .paths import display_path, output_dir

__all__ = ["load_checkpoint", "checkpoint_path", "run_meta", "record_run"]

PLAIN_TYPES = (str, int, float, bool, type(None))
# load_checkpoint 重建模型、评估和预测时必须知道的元数据；save_checkpoint 缺了任何一项都拒绝写
REQUIRED_META = {
    "arch": "网络结构（\"resnet18\" 或 \"efficientnet_lite0\"）", "num_classes": "类别数",
    "class_names": "类名列表（按类别序号排列）", "image_size": "输入边长（像素）", "resize_size": "评估时先缩放到的边长",
    "mean": "归一化的均值（3 个数）", "std": "归一化的标准差（3 个数）",
}


class CheckpointError(RuntimeError):
    """文件不是课程的检查点，或者与当前设置不一致。"""


class CheckpointNotFound(CheckpointError, FileNotFoundError):
    """检查点文件不存在（还没有运行 04 训练）。"""


def checkpoint_path(profile: str, strategy: str, kind: str = "best") -> Path:
    """检查点位置：``outputs/<档位>/checkpoints/<strategy>_<kind>.pt``；kind 为 "best" 或 "last"。"""
    if kind not in ("best", "last"):
        raise ValueError(f"kind 只能是 \"best\"（验证集最优）或 \"last\"（最后一轮，续训用），收到 {kind!r}。")
    return output_dir(profile, "checkpoints") / f"{strategy}_{kind}.pt"


def metrics_path(profile: str, strategy: str) -> Path:
    """指标 JSON 的位置：``outputs/<档位>/metrics/<strategy>.json``。"""
    return output_dir(profile, "metrics") / f"{strategy}.json"


# ---------------------------------------------------------------- 写检查点

def save_checkpoint(path, model, meta: dict, *, train_state: dict | None = None) -> Path:
    """把 ``{"state_dict", "meta"}``（续训时再加 "train_state"）原子地写到 path（见 ``_atomic_write``）。

    meta 只能含 str、int、float、bool、None 以及它们组成的 list / dict，加载时才能用 ``weights_only=True``。
    """
    import torch

    _check_plain(meta, "meta")
    missing = [f"{key}（{text}）" for key, text in REQUIRED_META.items() if key not in meta]
    if missing:
        raise CheckpointError(f"检查点元数据缺少 {'、'.join(missing)}：没有它们，load_checkpoint 就无法重建模型、"
                              "按原样预处理图片。用 cu.checkpoints.run_meta(settings, info, class_names) 生成元数据，"
                              "再把你自己的项加进去。")
    if len(meta["class_names"]) != meta["num_classes"]:
        raise CheckpointError(f"检查点元数据里 class_names 有 {len(meta['class_names'])} 个，num_classes 却是 "
                              f"{meta['num_classes']}：两者必须一致。")
    state_dict = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    payload = {"state_dict": state_dict, "meta": meta}
    if train_state is not None:
        payload["train_state"] = train_state
    path = Path(path)
    _atomic_write(path, lambda f: torch.save(payload, f))
    return path


def _atomic_write(path: Path, write) -> None:
    """先写同一目录里的临时文件并 fsync，再 ``os.replace`` 成 path：出错时旧文件原样保留，临时文件删掉，异常照抛。"""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    if os.name == "posix":  # 让改名本身也落盘；Windows 不支持打开目录
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _check_plain(value, where: str) -> None:
    """确认 value 只由普通类型组成，否则用中文指出是哪一项。"""
    if type(value) is dict:
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"检查点元数据 {where} 的键必须是字符串，收到 {key!r}。")
            _check_plain(item, f"{where}[{key!r}]")
    elif type(value) in (list, tuple):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]")
    elif type(value) not in PLAIN_TYPES:  # 严格比较类型：numpy.float64 之类的子类也不行
        raise TypeError(f"检查点元数据 {where} 是 {type(value).__name__}，只能用 str、int、float、bool、None、list、dict，"
                        "否则无法用 weights_only=True 安全加载。先把它转换成普通类型（例如 str(path)、float(x)）。")


def library_versions() -> dict:
    """torch、torchvision、Python 的版本号（普通字符串），写进检查点元数据。"""
    import torch
    import torchvision

    # str()：torch.__version__ 是 str 的子类，原样保存会让 weights_only=True 拒绝加载
    return {"torch": str(torch.__version__), "torchvision": str(torchvision.__version__),
            "python": platform.python_version()}


# ---------------------------------------------------------------- 读检查点

def load_checkpoint(path, device="cpu"):
    """安全地加载课程检查点，返回 ``(model, meta)``；模型已放到 device 上并处于评估模式（eval）。

    按 meta 的 arch 和 num_classes 搭出同样的结构（随机初始化，不下载权重），再用 ``weights_only=True`` 读入
    state_dict：文件里只有张量和普通类型，不会执行任何代码。
    """
    from .models import _random_network, replace_head

    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFound(_missing_checkpoint_message(path))
    payload = read_checkpoint(path)
    meta = payload["meta"]
    model = _random_network(meta["arch"])
    replace_head(model, meta["num_classes"])
    model.load_state_dict(payload["state_dict"])
    return model.to(device).eval(), meta


def read_checkpoint(path) -> dict:
    """用 weights_only=True 读出检查点文件的全部内容（字典：state_dict、meta，续训用的还有 train_state），
    不重建模型；想看看检查点里存了什么时用它。不是课程检查点时给出中文解释。"""
    import torch

    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"拒绝加载 {display_path(path)}：它不是课程的检查点，像是用 torch.save(model) 保存的整个模型（原教程的做法）。"
            "这种文件加载时要执行文件里的 Python 代码（pickle），来源不明时并不安全，PyTorch 2.6 起默认拒绝；"
            "而且换了库版本就可能读不出来。课程只保存 state_dict 和元数据。"
            "办法：运行 04_train.ipynb 重新训练；或者（只在你信任这个文件时）自己用 "
            "torch.load(路径, weights_only=False) 取出模型，再保存它的 state_dict()。"
        ) from exc
    except (RuntimeError, EOFError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{display_path(path)} 读不出来，文件可能已损坏或不是 PyTorch 文件（{exc}）。"
                              "重新运行 04 生成它。") from exc
    if not (isinstance(payload, dict) and "state_dict" in payload and "meta" in payload):
        raise CheckpointError(f"{display_path(path)} 不是课程的检查点：缺少 \"state_dict\" 和 \"meta\" 两项"
                              "（可能只是一个裸的 state_dict）。没有元数据就不知道模型结构和类别名。"
                              "用 04_train.ipynb 训练，生成的检查点才能在这里加载。")
    return payload


def _missing_checkpoint_message(path: Path) -> str:
    strategy = path.stem.rsplit("_", 1)[0] or "freeze"
    profile = path.parent.parent.name if path.parent.name == "checkpoints" else "（你的档位）"
    return (
        f"找不到检查点 {display_path(path)}。它是 04_train.ipynb 训练后写出的：先在 {profile} 档位下运行 04，"
        f"并把 STRATEGY 设为 \"{strategy}\"，例如\n"
        f"  python -m course_utils run --profile {profile} --only 04 -p STRATEGY={strategy}"
    )


# ---------------------------------------------------------------- 一次训练的记录

def best_epoch(history: list[dict]) -> dict:
    """验证准确率最高的那一轮（并列时取最早的一轮）。"""
    if not history:
        raise ValueError("历史记录是空的：还没有训练任何一轮。")
    return max(history, key=lambda record: (record["val_acc"], -record["epoch"]))


def run_meta(settings, info: dict, class_names) -> dict:
    """一次训练的元数据（检查点和指标 JSON 共用）：``cu.build_model`` 的 info 加上类名、预处理和全部设置。"""
    return {
        **info, "class_names": [str(name) for name in class_names], "num_classes": len(class_names),
        "image_size": int(settings.image_size), "resize_size": int(settings.resize_size),
        "mean": [float(v) for v in info["mean"]], "std": [float(v) for v in info["std"]],
        "profile": settings.profile, "settings": settings.to_dict(),
    }


def summarize_run(meta: dict, history: list[dict], *, trainable_params: int, total_params: int, device,
                  test: dict | None = None) -> dict:
    """把一次训练整理成指标字典（写进 ``metrics/<策略>.json``；06 用它对比）。

    meta 是 ``run_meta`` 的结果；test 是测试集上的 ``{"loss", "acc"}``，还没评就是 None。"""
    best, seconds = best_epoch(history), [record["seconds"] for record in history]
    keep = ("strategy", "profile", "arch", "weights", "weights_note", "image_size", "settings")
    return {
        **{key: meta.get(key) for key in keep}, "epochs": len(history),
        "best_epoch": best["epoch"], "best_val_acc": best["val_acc"],
        "test_acc": test["acc"] if test else None, "test_loss": test["loss"] if test else None,
        "trainable_params": int(trainable_params), "total_params": int(total_params),
        "seconds_total": sum(seconds), "seconds_per_epoch": sum(seconds) / len(seconds),
        "cache_seconds": sum(record.get("cache_seconds", 0.0) for record in history),
        "feature_cache": bool(meta.get("settings", {}).get("feature_cache")), "device": str(device),
        "history": [dict(record) for record in history],
    }


def record_run(meta: dict, history: list[dict], model, *, device, test: dict | None = None):
    """04 的最后一步：把这次训练整理成指标 JSON，写到 ``outputs/<档位>/metrics/<策略>.json``，返回一张摘要表。"""
    from .models import count_params

    counts = count_params(model)
    metrics = summarize_run(meta, history, trainable_params=counts["trainable"], total_params=counts["total"],
                            device=device, test=test)
    path = write_metrics(metrics_path(meta["profile"], meta["strategy"]), metrics)
    return metrics_summary(metrics, path)


def metrics_summary(metrics: dict, path=None):
    """指标里最要紧的几项，整理成“项目 / 取值”小表（百分数、秒数已格式化）；给出 path 时加一行文件位置。"""
    import pandas as pd

    def percent(value):
        return "—（06 选定策略之后再评）" if value is None else f"{value:.1%}"

    rows = {
        "策略": metrics["strategy"], "网络结构": metrics["arch"],
        "初始权重": metrics.get("weights_note") or metrics.get("weights") or "随机初始化",
        "最佳轮次": metrics["best_epoch"], "最佳验证准确率": percent(metrics["best_val_acc"]),
        "测试准确率": percent(metrics.get("test_acc")),
        "可训练参数": f"{metrics['trainable_params']:,} / {metrics['total_params']:,}",
        "每轮用时（秒）": f"{metrics['seconds_per_epoch']:.2f}",
        "缓存特征": f"是（提取特征 {metrics['cache_seconds']:.1f} 秒，已计入用时）" if metrics.get("feature_cache") else "否",
    }
    if path is not None:
        rows["指标文件"] = display_path(path)
    return pd.DataFrame({"取值": [str(v) for v in rows.values()]}, index=pd.Index(list(rows), name="项目"))


# 需要预训练权重的策略从随机初始化开始时，这意味着什么（06 的说明和讲义的提示框共用）
RANDOM_START_EFFECTS = {
    "freeze": "freeze 只是在一个随机的、冻结的主干网络上训练分类头，几乎学不到东西",
    "finetune": "finetune 等同于从头训练（只是主干网络的学习率更小）",
}


def random_start(metrics: dict) -> tuple[list[str], str]:
    """{策略: 指标} 里本该用预训练权重、却从随机初始化开始的策略（按课程里的顺序），以及这意味着什么的一句话。"""
    order = ("freeze", "finetune")
    strategies = [s for s in order if s in metrics and not metrics[s].get("weights")]
    return strategies, "；".join(RANDOM_START_EFFECTS[s] for s in strategies)


# ---------------------------------------------------------------- 指标文件

def write_metrics(path, metrics: dict) -> Path:
    """把指标写成 UTF-8 JSON（中文原样保存、缩进 2），先写临时文件再改名。"""
    _check_plain(metrics, "metrics")
    text = json.dumps(metrics, ensure_ascii=False, indent=2) + "\n"
    path = Path(path)
    _atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def read_metrics(path) -> dict:
    """读取 write_metrics 写的 JSON。"""
    return json.loads(Path(path).read_text(encoding="utf-8"))
