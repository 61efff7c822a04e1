"""三种策略的编排：用一个小笔记本代替 04，检查训练、复用、随机权重不复用、出错信息、检查点补训练、对比表与说明。"""

import nbformat
import pytest

import course_utils as cu
from course_utils.compare import RECORD_METADATA_KEY, _epoch_seconds, _finished_run_matches, _reuse_blocker


pytestmark = pytest.mark.usefixtures("chinese_font")  # 见 conftest.py

FAKE_TRAIN = """
import course_utils as cu

if STRATEGY == "broken":
    raise RuntimeError("故意出错")
settings = cu.with_training_defaults(cu.resolve_settings(PROFILE, epochs=EPOCHS, weights=WEIGHTS, strategy=STRATEGY))
log = cu.output_dir(settings.profile) / "runs.log"
log.write_text((log.read_text() if log.exists() else "") + f"{STRATEGY}:{WEIGHTS}\\n")
acc = {"freeze": 0.8, "finetune": 0.9, "scratch": 0.3}[STRATEGY]
import pathlib
loaded = settings.weights if STRATEGY != "scratch" and pathlib.Path(str(settings.weights)).is_file() else None
history = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": acc, "val_loss": 1.2 / e,
            "val_acc": acc * e / settings.epochs, "lr": 0.001, "seconds": 2.0} for e in range(1, settings.epochs + 1)]
cu.write_metrics(cu.metrics_path(settings.profile, STRATEGY), {
    "strategy": STRATEGY, "profile": settings.profile, "weights": loaded,
    "weights_note": "", "epochs": settings.epochs, "best_epoch": settings.epochs, "best_val_acc": acc,
    "test_acc": acc - 0.05, "trainable_params": 100 if STRATEGY == "freeze" else 1000, "total_params": 1000,
    "seconds_total": 2.0 * settings.epochs, "seconds_per_epoch": 2.0, "device": "cpu",
    "feature_cache": settings.extra["feature_cache"], "history": history, "settings": settings.to_dict()})
cu.checkpoint_path(settings.profile, STRATEGY).write_bytes(b"checkpoint")
"""


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    """一个像 04 那样写指标 JSON 和检查点的小笔记本；输出目录换到临时目录（子内核继承环境变量）。"""
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE = None\nSTRATEGY = "freeze"\nEPOCHS = None\nWEIGHTS = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(FAKE_TRAIN)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "04_fake.ipynb"
    nbformat.write(nb, path)
    return path


def _runs(tmp_path):
    """小笔记本被执行过的记录：["策略:WEIGHTS", ...]。"""
    log = tmp_path / "outputs" / "smoke" / "runs.log"
    return log.read_text().split() if log.exists() else []


def test_run_strategies_trains_each_strategy_once_then_reuses_matching_runs(fake_train, tmp_path, capfd):
    table = cu.run_strategies("smoke", ["freeze", "scratch"], {"EPOCHS": None}, notebook=fake_train)
    assert _runs(tmp_path) == ["freeze:None", "scratch:None"]
    assert "Kernel is running" not in capfd.readouterr().err  # 子内核的启动日志不会混进笔记本输出
    assert table["来源"].tolist() == ["本次训练：还没有训练结果"] * 2
    assert list(table.index) == ["冻结主干，只训练分类头（freeze）", "从头训练（scratch）"]
    assert table["测试集准确率"].tolist() == pytest.approx([0.75, 0.25])
    assert table["可训练参数"].tolist() == [100, 1000]
    assert table["初始权重"].tolist() == ["随机初始化", "随机初始化"]
    executed = tmp_path / "outputs" / "smoke" / "notebooks"
    record = nbformat.read(executed / "04_fake_freeze.ipynb", as_version=4)
    assert record.metadata[RECORD_METADATA_KEY]["strategy"] == "freeze"  # 讲义据此归入“训练记录”
    assert (executed / "04_fake_scratch.ipynb").exists()

    again = cu.run_strategies("smoke", ["freeze", "scratch"], {"EPOCHS": None}, notebook=fake_train)
    assert _runs(tmp_path) == ["freeze:None", "scratch:None"]  # 设置相同：不再训练
    assert again["来源"].tolist() == ["复用已有结果", "复用已有结果"]

    assert _reuse_blocker("smoke", "freeze", {"EPOCHS": 2}) == "设置不同（epochs）"  # 轮数不同：要重新训练

    forced = cu.run_strategies("smoke", ["freeze"], {"EPOCHS": 2}, force=True, notebook=fake_train)
    assert _runs(tmp_path) == ["freeze:None", "scratch:None", "freeze:None"]
    assert forced["轮数"].tolist() == [2] and forced["来源"].tolist() == ["本次训练：指定了重新训练（FORCE）"]


def test_runs_that_fell_back_to_random_weights_are_not_reused_once_the_weights_are_here(fake_train, tmp_path):
    """WEIGHTS 一路传到 04。上次没拿到权重（随机初始化）的 freeze / finetune：本机还是没有权重时照样复用
    （离线重训只会再次随机初始化），权重到了本机就不再复用；scratch 不用权重，总是复用。"""
    weights = tmp_path / "resnet18.pth"
    asked = {"WEIGHTS": str(weights)}  # 小笔记本里：文件存在才算“加载了权重”
    table = cu.run_strategies("smoke", ["freeze"], asked, notebook=fake_train)
    assert _runs(tmp_path) == [f"freeze:{weights}"] and table["初始权重"].tolist() == ["随机初始化"]
    assert _finished_run_matches("smoke", "freeze", asked)  # 权重仍然不在本机：复用
    weights.write_bytes(b"weights")
    assert _reuse_blocker("smoke", "freeze", asked) == "上次没有用上预训练权重，现在本机有了"

    def fake_metrics(strategy, weights_asked, weights_loaded):
        settings = cu.with_training_defaults(cu.resolve_settings("smoke", weights=weights_asked, strategy=strategy))
        metrics = {"settings": settings.to_dict(), "weights": weights_loaded}
        cu.write_metrics(cu.metrics_path("smoke", strategy), metrics)

    fake_metrics("scratch", str(weights), None)
    assert _finished_run_matches("smoke", "scratch", asked)  # scratch 本来就不用预训练权重
    fake_metrics("freeze", str(weights), str(weights))
    assert _finished_run_matches("smoke", "freeze", asked)  # 上次用上了：复用
    assert _reuse_blocker("smoke", "freeze", {"WEIGHTS": "other.pth"}) == "设置不同（weights）"


def test_run_strategies_names_the_failing_strategy_and_the_executed_copy(fake_train):
    with pytest.raises(cu.StrategyRunFailed, match="STRATEGY = 'broken'.*故意出错(.|\\n)*04_fake_broken.ipynb"):
        cu.run_strategies("smoke", ["broken"], notebook=fake_train)


def test_ensure_checkpoint_trains_only_where_it_is_cheap(fake_train, tmp_path):
    with pytest.raises(FileNotFoundError, match="先运行 04_train.ipynb.*--only 04 -p STRATEGY=finetune"):
        cu.ensure_checkpoint("full", "finetune", notebook=fake_train)  # full 档位训练很久：只提示
    assert _runs(tmp_path) == []
    path = cu.ensure_checkpoint("smoke", "finetune", notebook=fake_train)
    assert path == cu.checkpoint_path("smoke", "finetune") and path.exists()
    assert cu.ensure_checkpoint("smoke", "finetune", notebook=fake_train) == path
    assert _runs(tmp_path) == ["finetune:None"]  # 已经有了就不再训练


def _write_fake_metrics(profile, strategies, weights, seconds=(2.0, 2.0, 2.0), feature_cache=False,
                        asked="IMAGENET1K_V1"):
    for s in strategies:
        history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.5 / e, "val_acc": 0.2 * e, "seconds": sec}
                   for e, sec in enumerate(seconds, start=1)]
        cu.write_metrics(cu.metrics_path(profile, s), {
            "strategy": s, "weights": weights, "weights_note": "说明", "history": history, "test_acc": 0.5,
            "feature_cache": feature_cache and s == "freeze", "seconds_total": sum(seconds),
            "settings": {"weights": asked}})


def test_strategy_curves_have_one_line_per_strategy(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    _write_fake_metrics("demo", ["freeze", "finetune", "scratch"], "IMAGENET1K_V1")
    fig = cu.plot_strategy_curves("demo")
    acc_ax, loss_ax = fig.axes
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == [
        "冻结主干，只训练分类头（freeze）", "微调全部层（finetune）", "从头训练（scratch）"]
    assert [list(line.get_ydata()) for line in acc_ax.lines][0] == pytest.approx([0.2, 0.4, 0.6])
    assert len(loss_ax.lines) == 6  # 每种策略一条验证损失、一条训练损失
    assert list(acc_ax.get_xticks()) == [1, 2, 3]  # 轮数是整数
    plt.close(fig)
    with pytest.raises(FileNotFoundError, match="还没有这些策略的训练结果：missing"):
        cu.strategy_comparison("demo", ["freeze", "missing"])


def test_caveats_say_when_data_or_weights_are_not_the_real_thing(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    _write_fake_metrics("demo", ["freeze", "finetune", "scratch"], None)
    notes = cu.comparison_caveats("demo")
    text = "\n".join(notes)
    assert "不是 fruit30" in text
    assert "freeze、finetune 这次没有用上 ImageNet 预训练权重" in text
    assert "finetune 等同于从头训练（只是主干网络的学习率更小）" in text
    assert notes._repr_markdown_().startswith("- 这次用的是")  # 笔记本里显示成项目列表
    assert "拿到权重后" in text  # 想要权重却没拿到：告诉你怎样补救
    _write_fake_metrics("smoke", ["freeze", "finetune"], None, asked=None)
    smoke = "\n".join(cu.comparison_caveats("smoke", ["freeze", "finetune"]))
    assert "freeze、finetune 按设置没有用 ImageNet 预训练权重" in smoke and "拿到权重后" not in smoke
    _write_fake_metrics("quick", ["freeze", "finetune", "scratch"], "IMAGENET1K_V1")
    quick = cu.comparison_caveats("quick")
    assert not any("fruit30" in n or "没有用上" in n for n in quick)
    assert quick == ["freeze：说明", "finetune：说明", "scratch：说明"]  # 权重从哪里来


def test_feature_cache_time_is_reported_apart_from_the_epoch_time(tmp_path, monkeypatch):
    """缓存特征的时间算在第 1 轮里：表里“每轮用时”不含它，另列一栏，说明里点出没有数据增广。"""
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    _write_fake_metrics("demo", ["freeze", "finetune"], "IMAGENET1K_V1", seconds=(9.0, 1.0, 2.0), feature_cache=True)
    table = cu.strategy_comparison("demo", ["freeze", "finetune"])
    assert table["每轮用时（秒）"].tolist() == pytest.approx([1.5, 4.0])
    assert table["特征缓存用时（秒）"].iloc[0] == pytest.approx(7.5)
    assert table["特征缓存用时（秒）"].isna().iloc[1]
    text = "\n".join(cu.comparison_caveats("demo", ["freeze", "finetune"]))
    assert "freeze 缓存了主干网络的特征" in text and "约 7.5 秒" in text and "没有数据增广" in text
    assert _epoch_seconds({"feature_cache": True, "history": [{"seconds": 5.0}]}) == (5.0, None)  # 1 轮分不开
    recorded = {"feature_cache": True, "cache_seconds": 3.0, "history": [{"seconds": 5.0}, {"seconds": 2.0}]}
    assert _epoch_seconds(recorded) == (2.0, 3.0)  # 04 记下了缓存用时就直接用


def test_reuse_check_fills_in_defaults_like_notebook_04(tmp_path, monkeypatch):
    """只改 IMAGE_SIZE 时 04 会同步缩放 resize_size：复用判断要按同样的规则补全，才认得出已有结果。"""
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    trained = cu.with_training_defaults(cu.resolve_settings("demo", image_size=64, strategy="freeze"))
    assert trained.resize_size != cu.resolve_settings("demo").resize_size
    cu.write_metrics(cu.metrics_path("demo", "freeze"), {"settings": trained.to_dict(), "weights": "IMAGENET1K_V1"})
    assert _finished_run_matches("demo", "freeze", {"IMAGE_SIZE": 64})
    assert not _finished_run_matches("demo", "freeze", {"IMAGE_SIZE": 96})
    assert not _finished_run_matches("demo", "freeze", {"IMAGE_SIZE": 64, "FEATURE_CACHE": False})
    assert not _finished_run_matches("demo", "finetune", {"IMAGE_SIZE": 64})  # 没有结果
