"""迁移学习图像分类实战 · 课程辅助包。

笔记本里统一写 ``import course_utils as cu``，再调用 ``cu.fit(...)``、``cu.get_device()`` 等，
这样每个函数从哪里来一目了然。函数按用途分在这些模块里：

- ``config``：四种运行档位与设置；``paths``：仓库里的固定位置；``progress``：进度条；
- ``env``：随机种子、计算设备、笔记本设置、环境检查；``fonts``：中文字体；
- ``download``：下载与安全解压；``demo``：生成演示数据集；``imagefolder``：课程用的 ImageFolder；
  ``health``：数据健康检查；``data``：数据集与 DataLoader；``transforms``：图像预处理；
- ``models``：构建模型与三种迁移策略；``train``：训练循环；``checkpoints``：检查点与指标文件；
  ``features``：freeze 的特征缓存；
- ``evaluate``：评估与预测；``compare``：三种策略对比；``viz``：绘图；
  ``explain``：Grad-CAM，模型在看哪里（选学 10）；``embedding``：特征空间、k 近邻分数、t-SNE（选学 11）；
  ``onnx_export``：导出 ONNX、用 onnxruntime 预测并与 PyTorch 对照（选学 12）；
- ``runner``：按顺序执行全部笔记本；``handouts``：HTML 讲义。

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


@functools.lru_cache(maxsize=None)
def _declared_names(module_name: str) -> tuple[str, ...]:
    """不导入模块，直接从源代码里读出它的 __all__（这样查找名字时不会顺带导入 PyTorch）。"""
    source = (Path(__file__).parent / f"{module_name}.py").read_text(encoding="utf-8")
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return ()


def _owner(name: str) -> str | None:
    """名字 name 由哪个模块提供。"""
    return next((m for m in _MODULES if name in _declared_names(m)), None)


def __getattr__(name: str):
    if name.startswith("_"):
        raise AttributeError(name)
    if name in _MODULES:  # ``from . import paths`` 这类子模块导入，直接导入该模块
        return importlib.import_module(f"{__name__}.{name}")
    module_name = _owner(name)
    if module_name is None:
        raise AttributeError(f"course_utils 里没有 {name!r}。可用 dir(cu) 查看全部函数。")
    value = getattr(importlib.import_module(f"{__name__}.{module_name}"), name)
    globals()[name] = value  # 缓存，下次直接取
    return value


def __dir__():
    return sorted(set(globals()).union(*(_declared_names(m) for m in _MODULES)))
