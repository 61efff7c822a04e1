"""迁移学习图像分类实战 · 课程辅助包。

笔记本里写 ``import course_utils as cu``，再调用 ``cu.fit(...)`` 等；``dir(cu)`` 列出全部公开的名字（不到 60 个）：

- ``config``：四种运行档位与设置；``paths``：输出目录；``env``：随机种子、计算设备、环境检查；``fonts``：中文字体；
- ``data``：准备数据集，以及 03 写出来的预处理、ImageFolder 和 DataLoader；``health``：数据健康检查；
- ``models``：加载预训练网络，以及 04 写出来的换分类头、冻结和优化器；``train``：04 写出来的训练与评估循环和 ``fit``；
- ``checkpoints``：检查点与指标文件；``compare``：三种策略对比（06）；``evaluation``：评估的图表和 07 写出来的预测；
  ``viz``：其余的图。

笔记本写出来、后面又要复用的函数，在包里是一字不差的同一份。幕后部分在 ``files``、``download``、``demo``、``progress``、
``runner``、``handouts``。选学的函数用模块名调用：``cu.explain``（10）、``cu.embedding``（11）、``cu.onnx_export``（12）。
导入本包没有副作用，也不会立刻导入 PyTorch：第一次用到某个函数时才导入它所在的模块。
"""

from __future__ import annotations

import ast
import functools
import importlib
import pkgutil
from pathlib import Path

__version__ = "0.1.0"

# 包里的每个模块（不含 __main__ 这类下划线开头的）；每个模块用 __all__ 声明自己对外提供的函数
_MODULES = tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")))
OPTIONAL_MODULES = ("explain", "embedding", "onnx_export")  # 选学笔记本的辅助函数：cu.explain.grad_cam(...)
_CORE = tuple(m for m in _MODULES if m not in OPTIONAL_MODULES)


@functools.lru_cache(maxsize=None)
def _declared_names(module_name: str) -> tuple[str, ...]:
    """不导入模块，直接从源代码里读出它的 __all__（这样查找名字时不会顺带导入 PyTorch）。"""
    source = (Path(__file__).parent / f"{module_name}.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    if name in _MODULES:  # ``from . import paths`` 这类子模块导入，直接导入该模块
        return importlib.import_module(f"{__name__}.{name}")
    module_name = next((m for m in _CORE if name in _declared_names(m)), None)  # 哪个核心模块提供它
    if module_name is None:
        raise AttributeError(f"course_utils 里没有 {name!r}。可用 dir(cu) 查看全部函数。")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value  # 缓存，下次直接取
    return value


def __dir__():
    return sorted(public_names() | set(OPTIONAL_MODULES))


def public_names() -> set[str]:
    """核心名单：各核心模块 ``__all__`` 里的名字（``cu.`` 后面能直接用的函数和常量）。"""
    return set().union(*(_declared_names(m) for m in _CORE))
