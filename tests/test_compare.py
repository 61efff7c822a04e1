"""06 的对比：用一个小笔记本代替 04（写真的小检查点和指标），检查注入的参数、复用与重新训练、只按验证集选策略、
选定之后才评测试集、出错信息、检查点补训练、对比表、说明、两张图和数据量曲线的缓存。"""

import nbformat
import pytest

import course_utils as cu
from course_utils import compare
from course_utils.checkpoints import CheckpointNotFound, metrics_path, read_metrics, summarize_run, write_metrics
from course_utils.compare import COMPARISON_PARAMETERS, RECORD_METADATA_KEY, StrategyRunFailed, _choose, _reuse_blocker

pytestmark = pytest.mark.usefixtures("chinese_font", "one_torch_thread")  # 见 conftest.py

LABELS = {"freeze": "冻结主干，只训练分类头（freeze）", "finetune": "微调全部层（finetune）", "scratch": "从头训练（scratch）"}

# 像 04 那样：按注入的参数补全设置、建模型、写真的检查点（随机权重）和指标 JSON；验证准确率是编出来的
FAKE_TRAIN = """
import course_utils as cu
from course_utils.checkpoints import save_checkpoint

if STRATEGY == "broken":
    raise RuntimeError("故意出错")
settings = cu.resolve_settings(PROFILE, strategy=STRATEGY, epochs=EPOCHS, feature_cache=FEATURE_CACHE, test=TEST)
log = cu.output_dir(settings.profile) / "runs.log"
log.write_text((log.read_text() if log.exists() else "") + f"{STRATEGY}:{EPOCHS}:{FEATURE_CACHE}:{TEST}\\n")
class_names = cu.dataset_classes(settings.dataset)
model, head, info = cu.build_model(settings.arch, len(class_names), STRATEGY, weights=None)
meta = cu.run_meta(settings, info, class_names)
acc = {"freeze": 0.6, "finetune": 0.9, "scratch": 0.3}[STRATEGY]
history = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": acc, "val_loss": 1.2 / e,
            "val_acc": acc * e / settings.epochs, "lr": settings.lr, "seconds": 0.5, "cache_seconds": 0.0}
           for e in range(1, settings.epochs + 1)]
save_checkpoint(cu.checkpoint_path(settings.profile, STRATEGY), model,
                {**meta, "best_epoch": settings.epochs, "best_val_acc": acc})
cu.record_run(meta, history, model, device="cpu", test=None)
"""


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """输出目录换到临时目录（子内核继承环境变量）。"""
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    return tmp_path / "outputs"


@pytest.fixture
def fake_train(tmp_path, outputs):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(
        'PROFILE = None\nSTRATEGY = "freeze"\nEPOCHS = None\nFEATURE_CACHE = None\nTEST = True')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(FAKE_TRAIN)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "04_fake.ipynb"
    nbformat.write(nb, path)
    return path


def _runs(outputs, profile="smoke"):
    """小笔记本被执行过的记录：["策略:EPOCHS:FEATURE_CACHE:TEST", ...]。"""
    log = outputs / profile / "runs.log"
    return log.read_text().split() if log.exists() else []


def _write_metrics(profile, strategy, *, val, test=None, weights=None, feature_cache=False, epochs=3, asked=None):
    """不训练，直接写一份与 04 格式相同的指标（summarize_run 生成）；设置与 06 注入的参数补全后一致，可以复用。"""
    settings = cu.resolve_settings(profile, strategy=strategy, feature_cache=feature_cache,
                                   **({"weights": asked} if asked else {}))
    meta = {"strategy": strategy, "profile": profile, "arch": settings.arch, "weights": weights,
            "weights_note": f"{strategy}：说明" if weights else "未使用预训练权重：随机初始化。",
            "image_size": settings.image_size, "settings": settings.to_dict()}
    history = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": val, "val_loss": 1.5 / e, "val_acc": val * e / epochs,
                "lr": settings.lr, "seconds": 2.0, "cache_seconds": 0.0} for e in range(1, epochs + 1)]
    trainable = 100 if strategy == "freeze" else 1000
    test = None if test is None else {"acc": test, "loss": 1.0}
    write_metrics(metrics_path(profile, strategy), summarize_run(meta, history, trainable_params=trainable,
                                                                total_params=1000, device="cpu", test=test))


# ---------------------------------------------------------------- 执行 04：注入的参数、复用、重新训练


def test_run_strategies_trains_with_the_same_augmentation_then_reuses_and_retrains_when_settings_differ(
        fake_train, outputs):
    table = compare.run_strategies("smoke", ["freeze", "scratch"], {"EPOCHS": None}, notebook=fake_train)
    assert _runs(outputs) == ["freeze:None:False:False", "scratch:None:False:False"]  # 不缓存特征、先不评测试集
    assert table["来源"].tolist() == ["本次训练：还没有训练结果"] * 2
    assert list(table.index) == [LABELS["freeze"], LABELS["scratch"]]
    assert table["选中"].tolist() == ["✔（验证准确率最高）", ""]
    assert read_metrics(outputs / "smoke" / "metrics" / "choice.json")["strategy"] == "freeze"
    # 测试准确率是选定之后用真的检查点评出来的（随机权重，数值随意，但必须是评出来的）
    real = compare.checkpoint_test_accuracy(cu.checkpoint_path("smoke", "scratch"), "cpu")
    assert table.loc[LABELS["scratch"], "测试集准确率"] == pytest.approx(real["acc"])
    assert 0.0 <= real["acc"] <= 1.0
    assert table["分类头学习率"].tolist() == ["0.001", "0.001"]
    assert table["主干学习率"].tolist() == ["不训练", "0.001"]
    assert table["特征缓存"].tolist() == ["否", "否"] and table["初始权重"].tolist() == ["随机初始化"] * 2
    executed = outputs / "smoke" / "notebooks"
    record = nbformat.read(executed / "04_fake_freeze.ipynb", as_version=4)
    injected = {"FEATURE_CACHE": False, "TEST": False, "PROFILE": "smoke", "STRATEGY": "freeze"}
    assert record.metadata[RECORD_METADATA_KEY] == {"strategy": "freeze", "parameters": injected}  # 讲义据此归为训练记录

    again = compare.run_strategies("smoke", ["freeze", "scratch"], notebook=fake_train)
    assert len(_runs(outputs)) == 2 and again["来源"].tolist() == ["复用已有结果"] * 2  # 设置相同：不再训练

    # 设置不同就重新训练，并说出是哪一项不同；04 默认也不缓存特征，按默认设置训练的 04 可以直接复用
    assert _reuse_blocker("smoke", "freeze", {"EPOCHS": 2, **COMPARISON_PARAMETERS}) == "设置不同（epochs）"
    assert _reuse_blocker("smoke", "freeze", {}) is None
    assert _reuse_blocker("smoke", "freeze", {"FEATURE_CACHE": True}) == "设置不同（feature_cache）"
    assert _reuse_blocker("smoke", "finetune", COMPARISON_PARAMETERS) == "还没有训练结果"
    changed = compare.run_strategies("smoke", ["freeze"], {"EPOCHS": 2}, notebook=fake_train)
    assert changed["来源"].tolist() == ["本次训练：设置不同（epochs）"] and changed["轮数"].tolist() == [2]
    forced = compare.run_strategies("smoke", ["freeze"], {"EPOCHS": 2}, force=True, notebook=fake_train)
    assert forced["来源"].tolist() == ["本次训练：指定了重新训练（FORCE）"]
    assert _runs(outputs)[2:] == ["freeze:2:False:False"] * 2

    # 05、07 要的检查点：指定的策略没有结果时，在 smoke 档位当场训练一次，之后直接用
    path = compare.strategy_checkpoint("smoke", "finetune", notebook=fake_train)
    assert path == cu.checkpoint_path("smoke", "finetune") and path.exists()
    assert compare.strategy_checkpoint("smoke", "finetune", notebook=fake_train) == path
    assert _runs(outputs)[4:] == ["finetune:None:None:True"]  # 单独补训练用 04 的默认参数


def test_run_strategies_names_the_failing_strategy_and_the_executed_copy(fake_train, outputs):
    with pytest.raises(StrategyRunFailed, match="STRATEGY = 'broken'.*故意出错(.|\\n)*04_fake_broken.ipynb"):
        compare.run_strategies("smoke", ["broken"], notebook=fake_train)
    failed = nbformat.read(outputs / "smoke" / "notebooks" / "04_fake_broken.ipynb", as_version=4)
    assert failed.metadata[RECORD_METADATA_KEY]["strategy"] == "broken"  # 出错的副本也标成训练记录


# ---------------------------------------------------------------- 只按验证集选，选定之后才评测试集


def test_the_choice_is_made_on_validation_before_any_test_score_exists(outputs, monkeypatch):
    """验证集上最好的是 finetune，测试集上最好的却是 scratch：选中的必须是 finetune，而且选的时候还没有测试成绩。"""
    for strategy, val in {"freeze": 0.8, "finetune": 0.9, "scratch": 0.7}.items():
        _write_metrics("smoke", strategy, val=val, feature_cache=False)
    test_scores = {"freeze": 0.5, "finetune": 0.6, "scratch": 0.95}
    choice_file = outputs / "smoke" / "metrics" / "choice.json"
    seen = []

    def fake_test(path, device, profile=None):
        strategy = path.stem.rsplit("_", 1)[0]
        seen.append((strategy, choice_file.exists(), read_metrics(metrics_path("smoke", strategy))["test_acc"]))
        return {"acc": test_scores[strategy], "loss": 1.0}

    monkeypatch.setattr(compare, "checkpoint_test_accuracy", fake_test)
    table = compare.run_strategies("smoke", notebook="不会用到.ipynb")  # 三种都能复用：不执行笔记本
    assert seen == [(s, True, None) for s in cu.STRATEGIES]  # 每种评一次，都在选定之后，之前没有测试成绩
    assert read_metrics(choice_file)["strategy"] == "finetune"
    assert table["选中"].tolist() == ["", "✔（验证准确率最高）", ""]
    assert table["测试集准确率"].tolist() == pytest.approx([0.5, 0.6, 0.95])  # 测试集上 scratch 最好，也不改选择
    assert read_metrics(metrics_path("smoke", "scratch"))["test_acc"] == 0.95
    assert table["主干学习率"].tolist() == ["不训练", "0.0001", "0.001"]  # finetune 的主干学习率小十倍
    compare.run_strategies("smoke", notebook="不会用到.ipynb")
    assert len(seen) == 3  # 都已有测试成绩（评的是同一个最佳检查点）：再对比一次也不重评

    _write_metrics("smoke", "scratch", val=0.9)  # 并列时取课程里靠前的
    assert _choose("smoke", ["scratch", "finetune"]) == "scratch"
    assert _choose("smoke", cu.STRATEGIES) == "finetune"


def test_strategy_checkpoint_uses_the_choice_and_explains_itself(outputs, capsys):
    with pytest.raises(CheckpointNotFound, match="(?s)先运行 04_train.ipynb.*--only 04 -p STRATEGY=finetune"):
        compare.strategy_checkpoint("full", "finetune")  # full 档位训练很久：只提示，不训练
    with pytest.raises(CheckpointNotFound, match="full 档位、freeze 策略"):
        compare.strategy_checkpoint("full")  # 一种策略也没有训练过
    for strategy, val in {"freeze": 0.7, "scratch": 0.4}.items():
        _write_metrics("full", strategy, val=val)
        cu.checkpoint_path("full", strategy).write_bytes(b"")
    assert compare.strategy_checkpoint("full") == cu.checkpoint_path("full", "freeze")
    assert "还没有运行 06：在已经训练过的 freeze、scratch 里按验证准确率选了" in capsys.readouterr().out
    write_metrics(outputs / "full" / "metrics" / "choice.json", {"strategy": "scratch"})
    assert compare.strategy_checkpoint("full") == cu.checkpoint_path("full", "scratch")
    assert "使用 06 按验证集选中的策略：从头训练（scratch）。" in capsys.readouterr().out


# ---------------------------------------------------------------- 对比表、说明、学习曲线


def test_comparison_table_states_each_learning_rate_and_cost(outputs):
    for strategy in cu.STRATEGIES:
        _write_metrics("demo", strategy, val=0.9, test=0.8, weights=None if strategy == "scratch" else "来源")
    table = compare.strategy_comparison("demo")
    assert list(table.index) == list(LABELS.values())
    assert table["可训练参数"].tolist() == [100, 1000, 1000] and table["轮数"].tolist() == [3, 3, 3]
    assert table["分类头学习率"].tolist() == ["0.001"] * 3
    assert table["主干学习率"].tolist() == ["不训练", "0.0001", "0.001"]
    assert table["初始权重"].tolist() == ["来源", "来源", "随机初始化"]
    assert table["每轮用时（秒）"].tolist() == pytest.approx([2.0] * 3)
    with pytest.raises(FileNotFoundError, match="还没有这些策略的训练结果：missing"):
        compare.strategy_comparison("demo", ["freeze", "missing"])


def test_caveats_mention_random_weights_only_when_the_run_had_them(outputs):
    for strategy in cu.STRATEGIES:
        _write_metrics("smoke", strategy, val=0.3)  # smoke：按设置不用预训练权重
    smoke = compare.comparison_caveats("smoke")
    text = "\n".join(smoke)
    assert "不是 fruit30" in text
    assert "freeze、finetune 按设置没有用预训练权重（随机初始化）" in text and "拿到权重后" not in text
    assert "finetune 等同于从头训练（只是主干网络的学习率更小）" in text
    assert smoke._repr_markdown_().startswith("- 这次用的是课程生成的 smoke 数据集")  # 笔记本里显示成项目列表

    for strategy in ("freeze", "finetune"):  # 想要权重却没拿到：说明怎样补救
        _write_metrics("demo", strategy, val=0.3, asked="imagenet")
    assert "拿到权重后" in "\n".join(compare.comparison_caveats("demo", ["freeze", "finetune"]))

    for strategy in cu.STRATEGIES:  # 真的用上了预训练权重（quick 是 fruit30）
        _write_metrics("quick", strategy, val=0.9, weights=None if strategy == "scratch" else "IMAGENET1K_V1")
    quick = compare.comparison_caveats("quick")
    assert not any("随机" in note or "fruit30" in note for note in quick)
    assert quick == ["finetune：说明", "freeze：说明"]  # 只剩权重从哪里来（去重、排序）

    _write_metrics("quick", "freeze", val=0.9, weights="IMAGENET1K_V1", feature_cache=True)
    assert any("freeze 缓存了主干特征" in n and "没有数据增广" in n for n in compare.comparison_caveats("quick"))
    assert compare.Notes()._repr_markdown_() == "（没有需要特别注意的地方。）"


def test_strategy_curves_have_one_line_per_strategy(outputs):
    import matplotlib.pyplot as plt

    for strategy in cu.STRATEGIES:
        _write_metrics("demo", strategy, val=0.6)
    fig = compare.plot_strategy_curves("demo")
    acc_ax, loss_ax = fig.axes
    assert [t.get_text() for t in acc_ax.get_legend().get_texts()] == list(LABELS.values())
    assert len(acc_ax.lines) == 3 and list(acc_ax.lines[0].get_ydata()) == pytest.approx([0.2, 0.4, 0.6])
    assert len(loss_ax.lines) == 6  # 每种策略一条验证损失、一条训练损失
    assert list(acc_ax.get_xticks()) == [1, 2, 3]  # 轮数是整数
    plt.close(fig)


# ---------------------------------------------------------------- 数据量曲线


def test_data_efficiency_trains_each_point_once_and_reuses_the_cache(outputs, monkeypatch, capsys):
    import matplotlib.pyplot as plt
    import pandas as pd

    settings = cu.resolve_settings("smoke")
    table = compare.data_efficiency(settings, "cpu", sizes=(2,), strategies=("freeze", "scratch"))
    classes = len(cu.dataset_classes("smoke"))
    assert table["策略"].tolist() == ["freeze"] * 2 + ["scratch"] * 2
    assert table["每类训练图"].tolist() == [2, "全部"] * 2
    assert table["训练图片数"].tolist()[:2] == table["训练图片数"].tolist()[2:]  # freeze 共用特征，图片数照样对得上
    assert table["训练图片数"].iloc[0] == 2 * classes and table["训练图片数"].iloc[1] > 2 * classes
    assert table["类别数"].tolist() == [classes] * 4
    assert table["测试准确率"].between(0, 1).all()
    assert (outputs / "smoke" / "metrics" / "data_efficiency.json").exists()
    assert "训练:" not in capsys.readouterr().err  # 只有一个总进度条，每次训练的进度条不画

    def no_training(*args):
        raise AssertionError("不该重新训练")

    monkeypatch.setattr(compare, "_strategy_points", no_training)
    again = compare.data_efficiency(settings, "cpu", sizes=(2,), strategies=("freeze", "scratch"))
    assert "设置与上次相同：复用" in capsys.readouterr().out
    assert again.to_dict("list") == table.to_dict("list")
    with pytest.raises(AssertionError, match="不该重新训练"):  # 换了数据量：缓存不算数
        compare.data_efficiency(settings, "cpu", sizes=(3,), strategies=("freeze",))

    fig = compare.plot_data_efficiency(table.assign(测试准确率=[0.5, 0.6, 0.2, 0.2]))
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [LABELS["freeze"], LABELS["scratch"], "随机猜测（1 / 类别数）"]
    assert len(ax.lines) == 3 and list(ax.lines[1].get_ydata()) == pytest.approx([0.2, 0.2])  # 每种策略一条，加一条参考线
    assert list(ax.lines[2].get_ydata()) == pytest.approx([1 / classes] * 2)
    plt.close(fig)
