"""四种运行档位（profile）：同一套笔记本，按机器和用途换一组默认值；parameters 单元格（或 papermill）给出的值优先。

- full：完整 fruit30、ResNet-18、224 像素、20 轮，必须有 ImageNet 权重（GPU 上的正式课程）；
- quick：fruit30 每类固定 60 张、4 轮，其余同 full（CPU 课堂：2 核上整个课程约 15 分钟，见 benchmarks/ 的 ``--course``）；
- demo：生成的水果数据集，无需下载；EfficientNet-Lite0，权重随 pip 包装好（离线首次运行，``make run``）；
- smoke：极小的生成数据集、1 轮、几个批次、不用预训练权重（测试与 CI）。
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

__all__ = ["resolve_settings", "STRATEGIES"]

PROFILE_ENV_VAR = "COURSE_PROFILE"
DATASET_ENV_VAR = "COURSE_DATASET"  # 设了它，所有笔记本都改用这个数据集（名字或目录路径）
DEFAULT_PROFILE = "full"


class ProfileError(ValueError):
    """档位名或参数写错时抛出。"""


@dataclass(frozen=True)
class Settings:
    """一次运行的全部设置。字段都有中文说明，``to_frame()`` 可以整理成表格。"""

    profile: str
    dataset: str  # "fruit30" | "demo" | "smoke"：数据集注册表里的名字
    arch: str  # "resnet18" | "efficientnet_lite0"：网络结构（见 models.ARCHS）
    image_size: int  # 送进网络的边长（像素）
    resize_size: int  # 测试时先缩放到这个边长，再中心裁剪到 image_size
    epochs: int  # 训练轮数
    batch_size: int
    lr: float  # 分类头的学习率（finetune 的主干用它的 backbone_lr_scale 倍）
    backbone_lr_scale: float  # finetune 时主干学习率是分类头的几倍
    weights: str | None  # "imagenet"（这个结构的 ImageNet 权重）、权重名、本地文件路径；None 表示随机初始化
    weights_required: bool  # True：拿不到预训练权重就停下报错；False：退回随机初始化并醒目提示
    per_class_limit: int | None  # 每类最多取多少张训练图（quick 档用固定子集）；None 表示全部
    max_batches: int | None  # 每轮最多训练多少个批次（smoke 档用来封顶）；None 表示不限
    val_fraction: float  # 从 train/ 中分层划出多少比例作验证集
    num_workers: int | None  # DataLoader 进程数；None 表示按平台自动选择安全值
    seed: int
    extra: dict = field(default_factory=dict, compare=False)  # 笔记本自己的附加参数

    def replace(self, **changes) -> "Settings":
        """返回改了若干字段的新 Settings（原对象不变）。"""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """转成普通字典，便于写入指标 JSON 和检查点元数据。"""
        data = dataclasses.asdict(self)
        data.update(data.pop("extra"))
        return data

    def to_frame(self, keys=None):
        """整理成“设置 / 取值 / 说明”表格（pandas DataFrame）；keys：只列出这些设置（按给定顺序），None 表示全部。"""
        import pandas as pd

        values = self.to_dict()
        unknown = [key for key in keys or () if key not in values]
        if unknown:
            raise KeyError(f"没有这些设置：{', '.join(unknown)}。可选：{', '.join(values)}。")
        rows = [{"设置": key, "取值": str(values[key]), "说明": FIELD_HELP.get(key, "")} for key in (keys or values)]
        return pd.DataFrame(rows).set_index("设置")

    def table(self, *keys):
        """只显示与当前笔记本有关的几项设置，例如 ``settings.table("dataset", "image_size")``。"""
        return self.to_frame(keys or None)

    def _repr_html_(self) -> str:
        return self.to_frame().to_html()


FIELD_HELP = {
    "profile": "运行档位",
    "dataset": "数据集",
    "image_size": "输入边长（像素）",
    "resize_size": "评估时先缩放到的边长",
    "epochs": "训练轮数",
    "batch_size": "批量大小",
    "arch": "网络结构：resnet18（torchvision）或 efficientnet_lite0（timm）",
    "lr": "分类头的学习率（freeze、scratch 的全部层也用它）",
    "backbone_lr_scale": "finetune 时主干的学习率是分类头的几倍",
    "weights": "请求的预训练权重（是否真正加载，看构建模型时的输出）",
    "weights_required": "拿不到权重时是否停止",
    "per_class_limit": "每类训练图片上限",
    "max_batches": "每轮批次上限",
    "val_fraction": "从 train/ 划出的验证集比例",
    "num_workers": "数据加载进程数（None 为自动）",
    "seed": "随机种子",
    # 笔记本自己的参数（进入 settings.extra）
    "strategy": "迁移策略：freeze 只训练分类头 / finetune 微调全部层 / scratch 从头训练",
    "feature_cache": "是否缓存主干特征（只用于 freeze；换来速度，失去数据增广）",
    "test": "训练完是否在测试集上评一次（06 对比时先按验证集选定策略，再统一评测试集）",
    "num_classes": "类别数（只影响分类头的大小）",
    "dataset_url": "数据集下载地址（None 为注册表里的地址）",
    "archive": "本地压缩包路径（None 为不用）",
    "top_k": "显示前几个预测",
    "image_path": "要预测的图片（None 为课程自带的示例）",
    "strategies": "要比较的策略",
    "max_images": "最多取多少张测试图（None 为全部）",
    "perplexity": "t-SNE 的困惑度（None 为按图片数自动选择）",
}

IMAGENET = "imagenet"  # 这个结构的 ImageNet 权重：ResNet-18 是 torchvision 的 IMAGENET1K_V1，Lite0 是 pip 包里的那份
STRATEGIES = ("freeze", "finetune", "scratch")
STRATEGY_NAMES = {"freeze": "冻结主干，只训练分类头", "finetune": "微调全部层", "scratch": "从头训练"}
ARCHS = ("resnet18", "efficientnet_lite0")

# quick、demo 只写出与 full 不同的地方，smoke 只写出与 demo 不同的地方
_FULL = Settings(
    profile="full", dataset="fruit30", arch="resnet18", image_size=224, resize_size=256, epochs=20, batch_size=32,
    lr=1e-3, backbone_lr_scale=0.1, weights=IMAGENET, weights_required=True, per_class_limit=None, max_batches=None,
    val_fraction=0.15, num_workers=None, seed=42,
)
_DEMO = _FULL.replace(profile="demo", dataset="demo", arch="efficientnet_lite0", image_size=112, resize_size=128,
                      epochs=3, weights_required=False, extra={})
PROFILES: dict[str, Settings] = {
    "full": _FULL,
    "quick": _FULL.replace(profile="quick", epochs=4, per_class_limit=60, extra={}),
    "demo": _DEMO,
    "smoke": _DEMO.replace(profile="smoke", dataset="smoke", image_size=32, resize_size=36, epochs=1, batch_size=8,
                           weights=None, max_batches=2, val_fraction=0.25, num_workers=0, extra={}),
}


def resolve_profile(profile: str | None = None) -> str:
    """决定用哪个档位：显式参数优先，其次环境变量 COURSE_PROFILE，最后默认 full。"""
    name = profile if profile is not None else os.environ.get(PROFILE_ENV_VAR) or DEFAULT_PROFILE
    name = str(name).strip().lower()
    if name not in PROFILES:
        raise ProfileError(f"没有名为 {name!r} 的运行档位。可选：{' / '.join(PROFILES)}。"
                           f"检查笔记本 parameters 单元格里的 PROFILE，或环境变量 {PROFILE_ENV_VAR}。")
    return name


def resolve_settings(profile: str | None = None, **overrides) -> Settings:
    """按档位（None：环境变量 COURSE_PROFILE，默认 full）取默认设置，再用非 None 的覆盖值替换，返回不可变的 Settings。

    overrides 写成 ``epochs=EPOCHS``；不是 Settings 字段的名字（例如 STRATEGY）放进 ``settings.extra``，None 也保留。
    没有给 dataset 时，环境变量 COURSE_DATASET（数据集名，或 ``train/``、``val/`` 结构的目录）优先于档位默认：
    一个变量就能让整个课程换成你自己的数据。
    """
    base = PROFILES[resolve_profile(profile)]
    known = {f.name for f in dataclasses.fields(Settings)} - {"profile", "extra"}
    changes, extra = {}, {}
    for key, value in overrides.items():
        key = key.lower()
        if key not in known:
            extra[key] = value  # 笔记本自己的参数，None 也保留，设置表里能看到
        elif value is not None:
            changes[key] = _coerce(key, value, getattr(base, key))
    if "dataset" not in changes and os.environ.get(DATASET_ENV_VAR, "").strip():
        changes["dataset"] = _dataset_from_env(os.environ[DATASET_ENV_VAR].strip())
    if "arch" in changes and changes["arch"] not in ARCHS:
        raise ProfileError(f"课程支持的网络结构是 {' / '.join(ARCHS)}，收到的是 {changes['arch']!r}。检查 ARCH。")
    if "strategy" in extra:  # 训练用的笔记本（04）：检查策略名，补上是否缓存特征
        extra["strategy"] = check_strategy(extra["strategy"] or "freeze")
        extra["feature_cache"] = _feature_cache(extra.get("feature_cache"), extra["strategy"])
    if "image_size" in changes and "resize_size" not in changes:
        # 只改了输入边长时，评估用的缩放边长按档位原来的比例跟着变（例如 224 -> 256）
        changes["resize_size"] = round(changes["image_size"] * base.resize_size / base.image_size)
    return base.replace(**changes, extra=extra)


def check_strategy(strategy: str) -> str:
    """检查策略名（不分大小写），返回规范写法 "freeze" / "finetune" / "scratch"；写错时用中文列出可选项。"""
    name = str(strategy).strip().lower()
    if name not in STRATEGIES:
        choices = "；".join(f"{key}（{text}）" for key, text in STRATEGY_NAMES.items())
        raise ProfileError(f"未知的迁移策略 {strategy!r}。可选：{choices}。")
    return name


def _feature_cache(value, strategy: str) -> bool:
    """没有指定（None）时不缓存：三种策略的数据增广相同，06 的公平比较可以直接复用 04 的这次训练。"""
    value = _coerce("feature_cache", value, False) if value is not None else False
    if value and strategy != "freeze":
        raise ProfileError(f"特征缓存只适用于 freeze 策略，当前策略是 {strategy}。把 FEATURE_CACHE 设为 None 或 False。")
    return bool(value)


def _dataset_from_env(value: str) -> str:
    """COURSE_DATASET 的值：数据集名原样保留；目录的相对路径以仓库根目录为起点，写成绝对路径。"""
    from .paths import repo_path

    if value in {settings.dataset for settings in PROFILES.values()}:  # fruit30、demo、smoke
        return value
    return str(repo_path(value))


def _coerce(key: str, value, default):
    """把 papermill 传进来的字符串等转换成字段应有的类型，转换不了就给出中文提示。"""
    target = type(default) if default is not None else None
    if key == "weights" and isinstance(value, str) and value.strip().lower() in {"none", ""}:
        return None
    if target in (int, float) and not isinstance(value, bool):
        try:
            return target(value)
        except (TypeError, ValueError) as exc:
            raise ProfileError(f"参数 {key} 需要一个数字，收到的是 {value!r}。") from exc
    if target is bool and isinstance(value, str):
        return value.strip().lower() in {"1", "true", "yes", "是"}
    return value
