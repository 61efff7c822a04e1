"""迁移学习图像分类实战 · 课程辅助包。

笔记本里统一写 ``import course_utils as cu``，再调用 ``cu.fit(...)``、``cu.get_device()`` 等，
这样每个函数从哪里来一目了然。函数按用途分在这些模块里：

- ``config``：四种运行档位与设置；``paths``：仓库里的固定位置；
- ``env``：随机种子、计算设备、笔记本设置；``fonts``：中文字体；
- ``data``：数据集下载、生成与检查；``transforms``：图像预处理与数据加载；
- ``models``：构建模型与三种迁移策略；``train``：训练与检查点；
- ``evaluate``：评估与预测；``viz``：绘图；``runner``：按顺序执行全部笔记本。

导入本包没有副作用，也不会立刻导入 PyTorch：第一次用到某个函数时才导入它所在的模块。
"""

from __future__ import annotations

import functools
import importlib

__version__ = "0.1.0"

# 按这个顺序查找公开名字；每个模块用 __all__ 声明自己对外提供的函数
_MODULES = (
    "config", "paths", "progress", "env", "fonts", "data", "transforms",
    "models", "train", "evaluate", "viz", "handouts", "runner",
)


@functools.lru_cache(maxsize=None)
def _public_names() -> dict[str, str]:
    """公开名字 -> 所在模块名。"""
    names = {}
    for module_name in _MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module_name}":
                continue  # 这个模块还没有写，跳过
            raise
        for name in getattr(module, "__all__", ()):
            names.setdefault(name, module_name)
    return names


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    module_name = _public_names().get(name)
    if module_name is None:
        raise AttributeError(f"course_utils 里没有 {name!r}。可用 dir(cu) 查看全部函数。")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value  # 缓存，下次直接取
    return value


def __dir__():
    return sorted(set(globals()) | set(_public_names()))
