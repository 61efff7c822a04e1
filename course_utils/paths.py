"""课程仓库里的固定位置。所有路径都从本文件的位置推出来，与当前工作目录无关。

两个环境变量可以改写位置（测试和教室机房常用）：
- ``COURSE_DATA_DIR``：数据集存放处（默认仓库的 ``data/``）；
- ``COURSE_OUTPUT_DIR``：输出根目录（默认仓库的 ``outputs/``），其下按档位分子目录。
写相对路径时以仓库根目录为起点（不管笔记本在哪个目录里运行，都指向同一个地方）。
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["output_dir", "display_path"]

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
FONTS_DIR = REPO_ROOT / "fonts"

# 课程笔记本的文件名：两位编号 + 小写英文（00_setup.ipynb）；runner 按它排序执行，讲义按它排目录
NOTEBOOK_PATTERN = re.compile(r"^(\d\d)_[a-z0-9_]+\.ipynb$")
# 06 用 papermill 执行 04 留下的副本里的标记：讲义据此把它归入“训练记录”，而不是当成一节课
RECORD_METADATA_KEY = "course_training_run"

# outputs/<档位>/ 下的固定子目录：执行过的笔记本、检查点、图、指标、讲义
OUTPUT_KINDS = ("notebooks", "checkpoints", "figures", "metrics", "handouts")


def repo_path(path) -> Path:
    """展开 ``~``；相对路径以仓库根目录为起点（runner 和笔记本在不同目录运行，这样才指向同一个地方）。"""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def data_dir() -> Path:
    """数据集根目录（不存在就创建）。"""
    path = repo_path(os.environ.get("COURSE_DATA_DIR") or REPO_ROOT / "data")
    path.mkdir(parents=True, exist_ok=True)
    return path


def output_dir(profile: str, kind: str | None = None) -> Path:
    """某个档位的输出目录（不存在就创建），例如 ``output_dir("demo", "figures")``；kind 为 None 时是档位根目录。"""
    root = repo_path(os.environ.get("COURSE_OUTPUT_DIR") or REPO_ROOT / "outputs") / profile
    if kind is not None:
        if kind not in OUTPUT_KINDS:
            raise ValueError(f"未知的输出子目录 {kind!r}，可选：{', '.join(OUTPUT_KINDS)}。")
        root = root / kind
    root.mkdir(parents=True, exist_ok=True)
    return root


def display_path(path) -> str:
    """给人看的路径：仓库里的写成相对路径（如 outputs/demo/figures/a.png），不写某台电脑上的绝对路径；仓库外的原样返回。"""
    path = Path(path)
    try:
        return path.resolve().relative_to(REPO_ROOT).as_posix()
    except ValueError:
        return str(path)
