"""进度条：在 JupyterLab 里用网页进度条，在终端、papermill 和测试里用文字进度条。"""

from __future__ import annotations

import os
import warnings

__all__: list[str] = []  # 只供包内使用

HEADLESS_ENV_VAR = "COURSE_HEADLESS"


def is_headless() -> bool:
    """是否在无人值守地运行（runner、papermill、pytest 会设置 COURSE_HEADLESS=1）。"""
    return os.environ.get(HEADLESS_ENV_VAR, "").strip().lower() in {"1", "true", "yes"}


def progress_bar(iterable=None, **kwargs):
    """tqdm 进度条，参数与 tqdm 相同：交互运行时用 ``tqdm.autonotebook``（JupyterLab 中是网页进度条）；无人值守时用文字
    进度条，并把刷新间隔拉长，免得执行过的笔记本里堆满进度条的中间状态。不用 ``tqdm.auto``：它创建进度条时就 ``iter()``
    一次，对 DataLoader 就是多一个迭代器，多读几批、打乱的顺序也变（https://github.com/tqdm/tqdm/issues/1598）。"""
    if is_headless():
        from tqdm import tqdm

        if kwargs.get("leave") is False:  # 无人值守时不画一闪而过的内层进度条（每批一条），只留外层
            kwargs.setdefault("disable", True)
        kwargs.setdefault("mininterval", 10.0)
        kwargs.setdefault("ascii", True)
    else:
        from tqdm import TqdmExperimentalWarning

        with warnings.catch_warnings():  # tqdm.autonotebook 在 Jupyter 里会提醒一句“实验性”，不需要
            warnings.simplefilter("ignore", TqdmExperimentalWarning)
            from tqdm.autonotebook import tqdm
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
