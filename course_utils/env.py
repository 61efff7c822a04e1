"""运行环境：随机种子、计算设备、笔记本的统一设置，以及环境检查（[通过]/[失败]/[提示]）。"""

from __future__ import annotations

import os
import random
import shutil
import sys
import tempfile
from pathlib import Path

from . import paths
from .config import resolve_settings

__all__ = ["get_device", "setup_notebook", "check_environment"]


def seed_everything(seed: int = 42) -> None:
    """固定 Python、NumPy、PyTorch（CPU 和 GPU）的随机种子，让结果可以复现。"""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # 也会设置所有 GPU 的种子


def get_device(prefer: str | None = None):
    """选择计算设备（torch.device）：CUDA 优先，其次 Apple 芯片的 MPS，最后 CPU。
    prefer（"cuda" / "mps" / "cpu"）或环境变量 COURSE_DEVICE 可以强制指定。"""
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
    return ("没有检测到 GPU，将用 CPU 训练。CPU 上建议使用 quick 或 demo 档位"
            "（在 parameters 单元格设置 PROFILE，或设置环境变量 COURSE_PROFILE）；完整的 full 档位在 CPU 上要数小时。")


def setup_notebook(seed: int = 42) -> None:
    """每个笔记本开头调用一次：固定随机种子，注册中文字体，统一绘图风格。这是 course_utils 里唯一会修改全局状态的
    函数：随机数生成器、matplotlib 的 rcParams（风格、字体、分辨率）和字体列表；导入 course_utils 本身没有副作用。"""
    import matplotlib as mpl

    from .fonts import set_theme

    seed_everything(seed)
    set_theme()  # seaborn 风格 + 中文字体（seaborn 会重置字体，所以字体放在它之后设置）
    mpl.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


# ---------------------------------------------------------------- 环境检查：check_environment() 与 doctor 命令

REQUIREMENTS_FILE = paths.REPO_ROOT / "requirements.txt"
MIN_PYTHON = (3, 10)
TESTED_PYTHON = (3, 11)
FONT_SAMPLE = "迁移学习图像分类：苹果、香蕉，准确率（%）−12.5"
# 各档位至少需要的空闲磁盘（GB）：fruit30 压缩包约 216 MB、解压后相近，再加权重和检查点
MIN_FREE_GB = {"full": 1.5, "quick": 1.0, "demo": 0.3, "smoke": 0.05}
LABELS = {"python": "Python", "device": "计算设备", "font": "中文字体", "disk": "磁盘空间",
          "outputs": "输出目录", "dataset": "数据集"}


def _item(ok: bool, detail: str, required: bool = True) -> dict:
    """一项检查的结果。required=False 的项没通过时只算提示，不算失败。"""
    return {"ok": bool(ok), "detail": detail, "required": required}


def _tag(item: dict) -> str:
    return "[通过]" if item["ok"] else "[失败]" if item["required"] else "[提示]"


def _check_python() -> dict:
    shown = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        return _item(False, f"{shown}，课程需要 3.10 以上。装好新版 Python 后重新创建 .venv。")
    note = "" if sys.version_info[:2] == TESTED_PYTHON else "（课程在 3.11 上测试，3.10 以上一般都能用）"
    return _item(True, shown + note)


def _pinned_requirements() -> list:
    """requirements.txt 里写死版本的包（Requirement 列表）；文件不在（不是从仓库安装的）时读 course-utils 包的依赖。"""
    from importlib import metadata

    from packaging.requirements import Requirement

    lines = (REQUIREMENTS_FILE.read_text(encoding="utf-8").splitlines() if REQUIREMENTS_FILE.is_file()
             else metadata.requires("course-utils") or [])
    specs = [line.split("#")[0].strip() for line in lines]
    return [Requirement(spec) for spec in specs if spec and not spec.startswith("-")]


def _check_package(requirement) -> dict:
    """已安装的版本是否满足 requirements.txt 的要求（忽略 +cu130 之类的本地标记）。"""
    from importlib import metadata

    fix = "在仓库根目录运行 pip install -r requirements.txt（或 make venv）。"
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return _item(False, f"没有安装（要求 {requirement.specifier}）。{fix}")
    ok = requirement.specifier.contains(installed.split("+")[0], prereleases=True)
    return _item(ok, installed if ok else f"装的是 {installed}，课程测试过的是 {requirement.specifier}。{fix}")


def _check_device() -> dict:
    """有 GPU（CUDA 或 MPS）算通过；只有 CPU 时给出选择档位的提示。"""
    try:
        device = get_device()
    except (ImportError, RuntimeError) as exc:
        return _item(False, f"无法确定计算设备：{exc}。先确认 PyTorch 装好了（见上面 torch 一行）。")
    return _item(device.type in ("cuda", "mps"), device_hint(device), required=False)


def _check_font() -> dict:
    """课程字体存在、matplotlib 能读、覆盖示例句子；顺带说明是否会用 SimHei。"""
    from matplotlib import font_manager, ft2font

    from . import fonts

    try:
        path = fonts.course_font_path()
        family = ft2font.FT2Font(str(path)).family_name
    except (OSError, RuntimeError) as exc:
        return _item(False, f"{exc}")
    missing = fonts.missing_glyphs(FONT_SAMPLE)
    if missing:
        return _item(False, f"{path.name} 缺少这些字：{''.join(sorted(missing))}。运行 {fonts.REBUILD_COMMAND} 重新生成。")
    simhei = fonts.find_simhei(font_manager.fontManager.ttflist)
    used = f"；检测到 SimHei（{simhei}），绘图时优先用它" if simhei else ""
    return _item(True, f"{family}（{path.name}）能显示“{FONT_SAMPLE}”{used}")


def _check_outputs(profile: str) -> dict:
    """输出目录能创建、能写入。"""
    try:
        root = paths.output_dir(profile)
        with tempfile.TemporaryFile(dir=root) as probe:
            probe.write(b"ok")
    except OSError as exc:
        return _item(False, f"无法写入输出目录：{exc}。检查磁盘和权限，或用环境变量 COURSE_OUTPUT_DIR 换一个可写的目录。")
    return _item(True, f"{root} 可以写入")


def _check_disk(profile: str) -> dict:
    """数据目录和输出目录所在磁盘的剩余空间，是否够这个档位用。"""
    need = MIN_FREE_GB[profile]
    lines, enough = [], True
    for name, locate in (("数据", paths.data_dir), ("输出", lambda: paths.output_dir(profile))):
        try:
            folder = locate()
        except OSError:
            lines.append(f"{name}目录无法创建（见其他检查项）")
            continue
        free = shutil.disk_usage(folder).free / 1e9
        enough = enough and free >= need
        lines.append(f"{name} {folder} 剩余 {free:.1f} GB")
    advice = "" if enough else f"。{profile} 档位至少需要 {need} GB：清理磁盘，或用 COURSE_DATA_DIR / COURSE_OUTPUT_DIR 换到空间大的磁盘"
    return _item(enough, "；".join(lines) + advice)


def _check_dataset(settings) -> dict:
    """fruit30 是否已经下载解压；demo / smoke 由课程按需生成；自带数据集（目录路径）要存在。"""
    from .data import dataset_status

    status, name = dataset_status(settings), str(settings.dataset)
    if name in ("demo", "smoke"):
        return _item(True, status)
    root = paths.data_dir() / "fruit30_split" if name == "fruit30" else Path(name).expanduser()
    ready = (root / "train").is_dir() and (root / "val").is_dir()
    return _item(ready, status, required=name != "fruit30")  # fruit30 还没下载只是提示：02 会下载它


def check_environment(print_report: bool = True, profile: str | None = None) -> dict:
    """检查课程需要的环境，逐项给出 [通过] / [失败] / [提示]（print_report=True 时每项打印一行）；不修改全局设置。

    profile：按哪个档位检查磁盘空间和数据集；None 表示读取环境变量 COURSE_PROFILE（默认 full）。
    返回：检查项 -> {"ok": 是否通过, "detail": 说明, "required": 不通过时是否算失败}；检查项依次为 "python"、
    requirements.txt 里的各个包名（如 "torch"）、"device"、"font"、"disk"、"outputs"、"dataset"。
    """
    settings = resolve_settings(profile)
    report = {"python": _check_python(), **{r.name.lower(): _check_package(r) for r in _pinned_requirements()},
              "device": _check_device(), "font": _check_font(), "disk": _check_disk(settings.profile),
              "outputs": _check_outputs(settings.profile), "dataset": _check_dataset(settings)}
    if print_report:
        print(format_report(report, settings.profile))
    return report


def format_report(report: dict, profile: str) -> str:
    """把检查结果排成文字：每项一行，最后一行总结。"""
    lines = [f"环境检查（档位 {profile}）"]
    lines += [f"{_tag(item)} {LABELS.get(name, name)}：{item['detail']}" for name, item in report.items()]
    failed = [LABELS.get(name, name) for name, item in report.items() if not item["ok"] and item["required"]]
    lines.append(f"有 {len(failed)} 项必需的检查没有通过：{'、'.join(failed)}。按上面的说明处理后重新检查。" if failed
                 else "必需的检查全部通过，可以开始学习了。[提示] 只是建议，不影响运行。")
    return "\n".join(lines)


def doctor(profile: str | None = None) -> int:
    """``python -m course_utils doctor`` 的入口：打印环境检查，有必需项失败时返回 1。"""
    report = check_environment(print_report=True, profile=profile)
    return 1 if any(not item["ok"] and item["required"] for item in report.values()) else 0
