"""绘图的公共部分：保存图表等。各主题的图（训练曲线、混淆矩阵……）放在各自的模块里。"""

from __future__ import annotations

from pathlib import Path

from . import paths

__all__ = ["save_figure"]


def save_figure(fig, profile: str, name: str, formats: tuple[str, ...] = ("png",)) -> Path:
    """把图保存到 ``outputs/<档位>/figures/<name>.<格式>``，返回第一个文件的路径。"""
    out_dir = paths.output_dir(profile, "figures")
    saved = [out_dir / f"{name}.{fmt}" for fmt in formats]
    for path in saved:
        fig.savefig(path)
    return saved[0]
