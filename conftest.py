"""pytest 全局设置：测试一律用 smoke 档位、文字进度条。

nbval 启动的内核会继承这里设置的环境变量，所以 ``pytest --nbval-lax notebooks/`` 也跑在 smoke 档位上。
"""

import os

import pytest

os.environ.setdefault("COURSE_PROFILE", "smoke")
os.environ.setdefault("COURSE_HEADLESS", "1")
os.environ.pop("COURSE_DATASET", None)  # 测试用档位自己的数据集，不受学习者换成自带数据集的设置影响


@pytest.fixture
def one_torch_thread():
    """测试机只有 2 个核、且常有别的进程在跑：PyTorch 用一个线程，免得 OpenMP 线程互相空转等待
    （实测快 1.5–5 倍）。测试模块用 ``pytestmark = pytest.mark.usefixtures("one_torch_thread")`` 启用。"""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def chinese_font():
    """图里的中文用课程字体画（与笔记本里 ``cu.setup_notebook()`` 的效果相同）。
    测试模块用 ``pytestmark = pytest.mark.usefixtures("chinese_font")`` 启用。"""
    import course_utils as cu

    cu.setup_chinese_font()
