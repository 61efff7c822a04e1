"""运行环境：随机种子、计算设备、笔记本的统一设置。"""

from __future__ import annotations

import os
import random

__all__ = ["seed_everything", "get_device", "device_hint", "setup_notebook"]


def seed_everything(seed: int = 42) -> None:
    """固定 Python、NumPy、PyTorch（CPU 和 GPU）的随机种子，让结果可以复现。"""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # 也会设置所有 GPU 的种子
    os.environ["PYTHONHASHSEED"] = str(seed)


def get_device(prefer: str | None = None):
    """选择计算设备：CUDA 优先，其次 Apple 芯片的 MPS，最后 CPU。

    参数：
        prefer：强制使用的设备名（"cuda" / "mps" / "cpu"）；None 表示自动选择。
            也可以用环境变量 COURSE_DEVICE 指定。
    返回：
        torch.device
    """
    import torch

    prefer = prefer or os.environ.get("COURSE_DEVICE") or None
    if prefer:
        return torch.device(prefer)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_hint(device) -> str:
    """用一句中文说明当前设备，以及没有 GPU 时该怎么办。"""
    import torch

    kind = getattr(device, "type", str(device))
    if kind == "cuda":
        return f"使用 GPU：{torch.cuda.get_device_name(device)}。"
    if kind == "mps":
        return "使用 Apple 芯片的 MPS 加速。"
    return (
        "没有检测到 GPU，将用 CPU 训练。CPU 上建议使用 quick 或 demo 档位"
        "（在 parameters 单元格设置 PROFILE，或设置环境变量 COURSE_PROFILE）；"
        "完整的 full 档位在 CPU 上要数小时。"
    )


def setup_notebook(seed: int = 42) -> None:
    """每个笔记本开头调用一次：固定随机种子，统一绘图风格。

    这是 course_utils 里唯一会修改全局状态的函数（随机数生成器、matplotlib 的 rcParams），
    导入 course_utils 本身没有任何副作用。
    """
    seed_everything(seed)
    import matplotlib as mpl

    mpl.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})
