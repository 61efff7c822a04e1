"""papermill 带参数执行 04_train.ipynb（smoke 档位）：每种策略都写出指标 JSON 和能加载的检查点。

工作目录是临时目录（笔记本不依赖从哪里启动），输出写到 COURSE_OUTPUT_DIR 指向的临时目录。
"""

import nbformat
import papermill as pm
import pytest

import course_utils as cu
from course_utils.paths import NOTEBOOKS_DIR

NOTEBOOK = NOTEBOOKS_DIR / "04_train.ipynb"


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))  # 内核继承这个环境变量
    monkeypatch.setenv("COURSE_HEADLESS", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # 2 核的测试机上，内核里一个线程反而更快更稳（见 test_train.py）
    return tmp_path


def _run(outputs, **parameters):
    executed = outputs / f"04_{parameters['STRATEGY']}.ipynb"
    pm.execute_notebook(str(NOTEBOOK), str(executed), parameters={"PROFILE": "smoke", **parameters},
                        cwd=str(outputs), kernel_name="python3", progress_bar=False)
    return nbformat.read(executed, as_version=4)


def _printed(nb) -> str:
    parts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", "") + str(output.get("data", {}).get("text/plain", "")))
    return "\n".join(parts)


def _check_run(outputs, strategy, nb):
    """一次 smoke 运行之后：指标 JSON 完整合理，检查点能加载，曲线图已保存，没有冒称 ImageNet。"""
    metrics = cu.checkpoints.read_metrics(cu.checkpoints.metrics_path("smoke", strategy))
    assert metrics["strategy"] == strategy and metrics["profile"] == "smoke"
    assert metrics["epochs"] == len(metrics["history"])
    for key in ("best_val_acc", "test_acc"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["seconds_total"] > 0 and metrics["seconds_per_epoch"] > 0
    assert metrics["feature_cache"] is False  # 默认不缓存特征（三种策略的数据增广相同）
    assert metrics["settings"]["strategy"] == strategy
    model, meta = cu.load_checkpoint(cu.checkpoint_path("smoke", strategy), device="cpu")
    assert meta["strategy"] == strategy and meta["profile"] == "smoke"
    assert len(meta["class_names"]) == meta["num_classes"] == cu.models.head_of(model).out_features
    assert cu.count_params(model)["total"] == metrics["total_params"]
    assert (metrics["trainable_params"] < 100_000) is (strategy == "freeze")
    assert (outputs / "outputs" / "smoke" / "figures" / f"history_{strategy}.png").is_file()
    # smoke 档位不加载预训练权重：学习者看到的任何地方都不能声称用了 ImageNet 权重
    assert metrics["weights"] is None and metrics["weights_note"].startswith("未使用预训练权重")
    assert "已加载" not in _printed(nb)
    return metrics


def _stderr(nb) -> str:
    return "\n".join(output.get("text", "") for cell in nb.cells for output in cell.get("outputs", [])
                     if output.get("name") == "stderr")


@pytest.mark.parametrize("strategy", ["finetune", "scratch"])
def test_each_strategy_writes_metrics_and_a_loadable_checkpoint(outputs, strategy):
    # 指定一个不存在的权重文件：smoke 档位不要求权重，应该退回随机初始化，并且只打印一段提示
    missing = str(outputs / "没有这个文件.pth")
    nb = _run(outputs, STRATEGY=strategy, WEIGHTS=missing)
    metrics = _check_run(outputs, strategy, nb)
    assert metrics["epochs"] == 1
    printed, stderr = _printed(nb), _stderr(nb)
    assert "Warning" not in stderr and "ipykernel" not in stderr  # 没有带源代码行的警告
    if strategy == "finetune":
        # 第 2 节和第 10 节各加载一次权重：每次一段提示，不多不少
        assert printed.count("【注意】") == 2 and "这次的结果不代表迁移学习的效果" in printed
        assert metrics["settings"]["weights"] == missing and "没能拿到" in metrics["weights_note"]
    else:  # scratch 从不加载权重，也就没什么要提示的
        assert "【注意】" not in printed


def test_freeze_run_and_resume_with_more_epochs(outputs):
    first = _check_run(outputs, "freeze", _run(outputs, STRATEGY="freeze"))["history"]
    nb = _run(outputs, STRATEGY="freeze", EPOCHS=2, RESUME=True)
    history = _check_run(outputs, "freeze", nb)["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert history[0] == first[0]  # 第 1 轮原样保留，只新训练了第 2 轮
    assert "接着训练" in _printed(nb)
