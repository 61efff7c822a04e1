"""评估：每个指标都与手算的结果比较（小例子里有一个从没被预测到的类别），预测与单张图片预测一致。"""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

import course_utils as cu


@pytest.fixture(autouse=True, scope="module")
def chinese_font():
    """图里的中文类名用课程字体画（与笔记本里 cu.setup_notebook() 的效果相同）。"""
    cu.setup_chinese_font()

# ---------------------------------------------------------------- 手算的小例子
# 4 个类别、10 个样本。“葡萄”有 1 个样本，但从来没有被预测到。
CLASSES = ["苹果", "香蕉", "橙子", "葡萄"]
LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 3])
PREDS = np.array([0, 0, 1, 2, 1, 1, 0, 1, 1, 0])
# 手算的混淆矩阵（行：真实，列：预测）
COUNTS = [
    [2, 1, 1, 0],
    [1, 2, 0, 0],
    [0, 2, 0, 0],
    [1, 0, 0, 0],
]
# 预测为各类的次数：4、5、1、0 -> 精确率 2/4、2/5、0/1、0（没有预测，按 0 计）
PRECISION = [2 / 4, 2 / 5, 0.0, 0.0]
RECALL = [2 / 4, 2 / 3, 0 / 2, 0 / 1]
F1 = [0.5, 2 * (2 / 5) * (2 / 3) / (2 / 5 + 2 / 3), 0.0, 0.0]  # 第二类也是 0.5
SUPPORT = [4, 3, 2, 1]


def test_hand_computed_f1_of_the_second_class_is_one_half():
    assert F1[1] == pytest.approx(0.5)


def test_classification_table_matches_hand_computation():
    table = cu.classification_table(LABELS, PREDS, CLASSES)
    assert list(table.columns) == ["精确率", "召回率", "F1", "样本数"]
    assert list(table.index) == CLASSES + ["宏平均", "加权平均"]  # 葡萄没被预测到，也在表里
    np.testing.assert_allclose(table.loc[CLASSES, "精确率"], PRECISION)
    np.testing.assert_allclose(table.loc[CLASSES, "召回率"], RECALL)
    np.testing.assert_allclose(table.loc[CLASSES, "F1"], F1)
    assert table.loc[CLASSES, "样本数"].tolist() == SUPPORT


def test_macro_and_weighted_averages_match_hand_computation():
    table = cu.classification_table(LABELS, PREDS, CLASSES)
    macro = table.loc["宏平均"]
    assert macro["精确率"] == pytest.approx((0.5 + 0.4 + 0 + 0) / 4)  # 0.225
    assert macro["召回率"] == pytest.approx((0.5 + 2 / 3 + 0 + 0) / 4)
    assert macro["F1"] == pytest.approx((0.5 + 0.5) / 4)  # 宏平均 F1 是各类 F1 的平均
    weighted = table.loc["加权平均"]
    assert weighted["精确率"] == pytest.approx((4 * 0.5 + 3 * 0.4) / 10)
    assert weighted["召回率"] == pytest.approx((4 * 0.5 + 3 * 2 / 3) / 10)  # 等于准确率 0.4
    assert weighted["F1"] == pytest.approx((4 * 0.5 + 3 * 0.5) / 10)
    assert macro["样本数"] == weighted["样本数"] == 10


def test_class_without_samples_is_still_listed_with_zeros():
    table = cu.classification_table([0, 1, 1], [0, 1, 0], ["甲", "乙", "丙"])
    assert table.loc["丙"].tolist() == [0.0, 0.0, 0.0, 0]


def test_confusion_counts_and_row_normalisation_match_hand_computation():
    counts = cu.confusion_table(LABELS, PREDS, CLASSES)
    assert counts.values.tolist() == COUNTS
    assert list(counts.index) == CLASSES and list(counts.columns) == CLASSES
    rates = cu.confusion_table(LABELS, PREDS, CLASSES, normalize=True)
    np.testing.assert_allclose(rates.values, np.array(COUNTS) / np.array(SUPPORT)[:, None])


def test_confusion_matrix_figure_shows_the_counts_with_chinese_labels():
    import warnings

    import matplotlib.pyplot as plt

    fig = cu.plot_confusion_matrix(LABELS, PREDS, CLASSES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 缺字（中文显示成方框）时 matplotlib 会发警告
        fig.canvas.draw()
    ax = fig.axes[0]
    shown = np.asarray(ax.collections[0].get_array()).reshape(4, 4)
    assert shown.tolist() == COUNTS
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(c) for row in COUNTS for c in row)
    plt.close(fig)
    fig = cu.plot_confusion_matrix(LABELS, PREDS, CLASSES, normalize=True)
    assert "25%" in [t.get_text() for t in fig.axes[0].texts]  # 苹果被认成香蕉：1/4
    plt.close(fig)


def test_most_confused_pairs_match_hand_computation():
    pairs = cu.most_confused_pairs(LABELS, PREDS, CLASSES, top=3)
    assert list(pairs.columns) == ["真实类别", "被预测为", "次数", "占该类比例"]
    # 橙子 -> 香蕉 2 次；其余都是 1 次，按真实类别、预测类别的顺序排
    assert pairs[["真实类别", "被预测为", "次数"]].values.tolist() == [
        ["橙子", "香蕉", 2], ["苹果", "香蕉", 1], ["苹果", "橙子", 1],
    ]
    np.testing.assert_allclose(pairs["占该类比例"], [2 / 2, 1 / 4, 1 / 4])
    everything = cu.most_confused_pairs(LABELS, PREDS, CLASSES, top=100)
    assert everything["次数"].sum() == 10 - 4  # 全部错误：10 个样本里对了 4 个
    assert cu.most_confused_pairs([0, 1], [0, 1], ["甲", "乙"]).empty


# 5 个样本的概率；真实类别的名次依次是 1、2、3、4、2
PROBS = np.array([
    [0.70, 0.10, 0.15, 0.05],
    [0.60, 0.30, 0.06, 0.04],
    [0.50, 0.30, 0.15, 0.05],
    [0.40, 0.30, 0.20, 0.10],
    [0.35, 0.45, 0.12, 0.08],
])
TOPK_LABELS = np.array([0, 1, 2, 3, 0])


@pytest.mark.parametrize("k, expected", [(1, 1 / 5), (2, 3 / 5), (3, 4 / 5), (4, 1.0)])
def test_topk_accuracy_matches_hand_computation(k, expected):
    assert cu.topk_accuracy(PROBS, TOPK_LABELS, k) == pytest.approx(expected)


def test_topk_accuracy_two_classes():
    probs = np.array([[0.7, 0.3], [0.4, 0.6], [0.9, 0.1]])
    assert cu.topk_accuracy(probs, [0, 0, 1], 1) == pytest.approx(1 / 3)


# ---------------------------------------------------------------- 用真实的小图片和小模型


def _tiny_image_folder(root, per_class=3):
    """每类几张纯色小图：红、绿、蓝（类别文件夹用中文名）。"""
    colors = {"红苹果": (220, 30, 30), "青苹果": (40, 200, 60), "蓝莓": (30, 40, 210)}
    for c, (name, rgb) in enumerate(colors.items()):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            shade = tuple(max(0, v - 25 * i) for v in rgb)
            Image.new("RGB", (20 + 4 * i, 16), shade).save(root / name / f"{i}.png")
    return root


def _tiny_model(num_classes=3):
    """平均颜色 -> 线性层：固定权重，结果可复现。"""
    torch.manual_seed(0)
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))


TRANSFORM = transforms.Compose([transforms.Resize(12), transforms.CenterCrop(10), transforms.ToTensor()])


@pytest.fixture
def tiny(tmp_path):
    dataset = datasets.ImageFolder(_tiny_image_folder(tmp_path / "val"), transform=TRANSFORM)
    return dataset, _tiny_model(), DataLoader(dataset, batch_size=4, shuffle=False)


def test_predict_returns_probabilities_labels_and_paths_in_dataset_order(tiny):
    dataset, model, loader = tiny
    result = cu.predict(model, loader, torch.device("cpu"))
    assert result.probs.shape == (9, 3)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1, rtol=1e-5)
    assert result.labels.tolist() == [label for _, label in dataset.samples]
    assert result.paths == [path for path, _ in dataset.samples]
    assert (result.preds == result.probs.argmax(axis=1)).all()
    with torch.no_grad():
        expected = torch.softmax(model(torch.stack([dataset[4][0]])), dim=1)[0].numpy()
    np.testing.assert_allclose(result.probs[4], expected, rtol=1e-5)
    assert not model.training  # 评估模式


def test_predict_refuses_a_shuffled_loader(tiny):
    dataset, model, _ = tiny
    with pytest.raises(ValueError, match="shuffle=False"):
        cu.predict(model, DataLoader(dataset, batch_size=4, shuffle=True), torch.device("cpu"))


def test_predict_image_uses_exactly_the_evaluation_preprocessing(tiny):
    dataset, model, loader = tiny
    result = cu.predict(model, loader, torch.device("cpu"))
    for index in (0, 5):
        path = result.paths[index]
        top = cu.predict_image(model, path, TRANSFORM, dataset.classes, torch.device("cpu"), k=3)
        assert list(top.columns) == ["类别", "概率"] and top.index.tolist() == [1, 2, 3]
        order = np.argsort(-result.probs[index])
        assert top["类别"].tolist() == [dataset.classes[i] for i in order]
        np.testing.assert_allclose(top["概率"], result.probs[index][order], rtol=1e-5)
    with Image.open(result.paths[0]) as image:  # 也接受 PIL 图片（任何模式）
        from_pil = cu.predict_image(model, image.convert("P"), TRANSFORM, dataset.classes, "cpu", k=2)
    assert len(from_pil) == 2
    with pytest.raises(FileNotFoundError, match="找不到图片"):
        cu.predict_image(model, "没有这张图.jpg", TRANSFORM, dataset.classes, "cpu")


def test_plot_topk_draws_one_bar_per_class_with_its_probability():
    import matplotlib.pyplot as plt

    top = pd.DataFrame({"类别": ["草莓", "杨梅", "荔枝"], "概率": [0.7, 0.2, 0.1]}, index=[1, 2, 3])
    fig = cu.plot_topk(top)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["荔枝", "杨梅", "草莓"]  # 最可能的在最上面
    assert [round(p.get_width(), 6) for p in ax.patches] == [0.1, 0.2, 0.7]
    assert "70.0%" in [t.get_text() for t in ax.texts]
    plt.close(fig)


def test_save_predictions_csv_round_trips_with_chinese_names(tiny, tmp_path):
    dataset, model, loader = tiny
    result = cu.predict(model, loader, torch.device("cpu"))
    path = cu.save_predictions_csv(result, dataset.classes, tmp_path / "sub" / "predictions.csv")
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")  # 带 BOM，Excel 认得出 UTF-8
    table = pd.read_csv(path, encoding="utf-8-sig")
    assert table.columns.tolist()[:5] == ["图片", "真实类别", "预测类别", "置信度", "是否正确"]
    assert table["真实类别"].tolist() == [dataset.classes[i] for i in result.labels]
    assert table["预测类别"].tolist() == [dataset.classes[i] for i in result.preds]
    np.testing.assert_allclose(table["概率-蓝莓"], result.probs[:, dataset.classes.index("蓝莓")], rtol=1e-6)
    assert table["是否正确"].sum() == (result.preds == result.labels).sum()


def test_show_misclassified_shows_the_most_confident_mistakes_first(tmp_path):
    import matplotlib.pyplot as plt

    paths = []
    for i in range(4):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (8, 8), (10 * i, 0, 0)).save(paths[-1])
    probs = np.array([[0.9, 0.1], [0.3, 0.7], [0.4, 0.6], [0.05, 0.95]])
    result = cu.Predictions(probs, np.array([0, 0, 0, 1]), probs.argmax(axis=1), paths)
    fig = cu.show_misclassified(result, ["甲", "乙"], n=5)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["真实：甲\n预测：乙（70%）", "真实：甲\n预测：乙（60%）"]
    assert sum(bool(ax.images) for ax in fig.axes) == 2
    plt.close(fig)
    perfect = cu.Predictions(probs, probs.argmax(axis=1), probs.argmax(axis=1), paths)
    fig = cu.show_misclassified(perfect, ["甲", "乙"])
    assert "没有分错的图片" in [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)


def test_show_model_input_undoes_the_normalisation(tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 100, 50)).save(path)
    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    transform = transforms.Compose([transforms.Resize(12), transforms.CenterCrop(10), transforms.ToTensor(),
                                    transforms.Normalize(mean, std)])
    fig = cu.show_model_input(path, transform, mean, std)
    shown = fig.axes[1].images[0].get_array()
    assert shown.shape == (10, 10, 3)
    np.testing.assert_allclose(shown[5, 5], np.array([200, 100, 50]) / 255, atol=1e-5)
    assert "10×10" in fig.axes[1].get_title() and "40×30" in fig.axes[0].get_title()
    plt.close(fig)


def test_check_class_names_rejects_a_different_dataset():
    assert cu.check_class_names({"class_names": ["甲", "乙"]}, ["甲", "乙"]) == ["甲", "乙"]
    with pytest.raises(ValueError, match="类别与检查点不一致"):
        cu.check_class_names({"class_names": ["甲", "乙"]}, ["乙", "甲"])


def test_checkpoint_summary_is_honest_about_random_weights():
    meta = {"arch": "resnet18", "strategy": "scratch", "profile": "smoke", "num_classes": 3,
            "image_size": 32, "resize_size": 36, "best_epoch": 1, "best_val_acc": 0.5, "weights": None}
    table = cu.checkpoint_summary(meta)
    assert table.loc["初始权重", "取值"] == "随机初始化"
    assert table.loc["迁移策略", "取值"] == "从头训练（scratch）"


# ---------------------------------------------------------------- 检查点与三种策略的编排（用小笔记本代替 04）

FAKE_TRAIN = """
import json, pathlib
import course_utils as cu

if STRATEGY == "broken":
    raise RuntimeError("故意出错")
settings = cu.with_training_defaults(cu.resolve_settings(PROFILE, epochs=EPOCHS, strategy=STRATEGY))  # 与 04 相同
log = cu.output_dir(settings.profile) / "runs.log"
log.write_text(log.read_text() + STRATEGY + "\\n" if log.exists() else STRATEGY + "\\n")
acc = {"freeze": 0.8, "finetune": 0.9, "scratch": 0.3}[STRATEGY]
history = [{"epoch": e, "train_loss": 1.0 / e, "train_acc": acc, "val_loss": 1.2 / e, "val_acc": acc * e / settings.epochs,
            "lr": 0.001, "seconds": 2.0} for e in range(1, settings.epochs + 1)]
cu.write_metrics(cu.metrics_path(settings.profile, STRATEGY), {
    "strategy": STRATEGY, "profile": settings.profile, "weights": None if STRATEGY == "scratch" else "IMAGENET1K_V1",
    "weights_note": "", "epochs": settings.epochs, "best_epoch": settings.epochs, "best_val_acc": acc,
    "test_acc": acc - 0.05, "trainable_params": 100 if STRATEGY == "freeze" else 1000, "total_params": 1000,
    "seconds_total": 2.0 * settings.epochs, "seconds_per_epoch": 2.0, "device": "cpu",
    "history": history, "settings": settings.to_dict()})
cu.checkpoint_path(settings.profile, STRATEGY).write_bytes(b"checkpoint")
"""


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    """一个像 04 那样写指标 JSON 和检查点的小笔记本；输出目录换到临时目录（子内核继承环境变量）。"""
    import nbformat

    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE = None\nSTRATEGY = "freeze"\nEPOCHS = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(FAKE_TRAIN)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "04_fake.ipynb"
    nbformat.write(nb, path)
    return path


def _runs(tmp_path):
    log = tmp_path / "outputs" / "smoke" / "runs.log"
    return log.read_text().split() if log.exists() else []


def test_run_strategies_trains_each_strategy_once_then_reuses_matching_runs(fake_train, tmp_path, capfd):
    table = cu.run_strategies("smoke", ["freeze", "scratch"], {"EPOCHS": None}, notebook=fake_train)
    assert _runs(tmp_path) == ["freeze", "scratch"]
    assert "Kernel is running" not in capfd.readouterr().err  # 子内核的启动日志不会混进笔记本输出
    assert table["来源"].tolist() == ["本次训练", "本次训练"]
    assert list(table.index) == ["冻结主干，只训练分类头（freeze）", "从头训练（scratch）"]
    assert table["测试集准确率"].tolist() == pytest.approx([0.75, 0.25])
    assert table["可训练参数"].tolist() == [100, 1000]
    assert table["初始权重"].tolist() == ["IMAGENET1K_V1", "随机初始化"]
    executed = tmp_path / "outputs" / "smoke" / "notebooks"
    assert (executed / "04_fake_freeze.ipynb").exists() and (executed / "04_fake_scratch.ipynb").exists()

    again = cu.run_strategies("smoke", ["freeze", "scratch"], {"EPOCHS": None}, notebook=fake_train)
    assert _runs(tmp_path) == ["freeze", "scratch"]  # 设置相同：不再训练
    assert again["来源"].tolist() == ["复用已有结果", "复用已有结果"]

    longer = cu.run_strategies("smoke", ["freeze"], {"EPOCHS": 2}, notebook=fake_train)
    assert _runs(tmp_path) == ["freeze", "scratch", "freeze"]  # 轮数不同：重新训练
    assert longer["轮数"].tolist() == [2] and longer["来源"].tolist() == ["本次训练"]


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
    assert _runs(tmp_path) == ["finetune"]  # 已经有了就不再训练


def _write_fake_metrics(profile, strategies, weights):
    for s in strategies:
        history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.5 / e, "val_acc": 0.2 * e} for e in (1, 2, 3)]
        cu.write_metrics(cu.metrics_path(profile, s), {"strategy": s, "weights": weights, "weights_note": "说明",
                                                       "history": history, "test_acc": 0.5})


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


def test_comparison_caveats_say_when_data_or_weights_are_not_the_real_thing(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    _write_fake_metrics("demo", ["freeze", "finetune", "scratch"], None)
    notes = "\n".join(cu.comparison_caveats("demo"))
    assert "不是 fruit30" in notes
    assert "freeze, finetune 这次没有用 ImageNet 预训练权重" in notes
    _write_fake_metrics("quick", ["freeze", "finetune", "scratch"], "IMAGENET1K_V1")
    assert not any("fruit30" in n or "没有用" in n for n in cu.comparison_caveats("quick"))


def test_reuse_check_fills_in_defaults_like_notebook_04(tmp_path, monkeypatch):
    """只改 IMAGE_SIZE 时 04 会同步缩放 resize_size：复用判断要按同样的规则补全，才认得出已有结果。"""
    from course_utils.evaluate import _finished_run_matches

    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    trained = cu.with_training_defaults(cu.resolve_settings("demo", image_size=64, strategy="freeze"))
    assert trained.resize_size != cu.resolve_settings("demo").resize_size
    cu.write_metrics(cu.metrics_path("demo", "freeze"), {"settings": trained.to_dict()})
    assert _finished_run_matches("demo", "freeze", {"IMAGE_SIZE": 64})
    assert not _finished_run_matches("demo", "freeze", {"IMAGE_SIZE": 96})
    assert not _finished_run_matches("demo", "freeze", {"IMAGE_SIZE": 64, "FEATURE_CACHE": False})
    assert not _finished_run_matches("demo", "finetune", {"IMAGE_SIZE": 64})  # 没有结果


def test_example_image_is_the_first_test_image_generated_on_demand(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))  # 空的数据目录：smoke 数据集当场生成
    path = cu.example_image(cu.resolve_settings("smoke"))
    test_dir = path.parent.parent
    assert test_dir.name == "val" and tmp_path in path.parents
    assert path.parent == sorted(p for p in test_dir.iterdir() if p.is_dir())[0]
    assert path == sorted(path.parent.iterdir())[0]
