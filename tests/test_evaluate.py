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


pytestmark = pytest.mark.usefixtures("chinese_font")  # 见 conftest.py

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
    written = [t.get_text() for t in ax.texts]
    assert sorted(t for t in written if t) == sorted(str(c) for row in COUNTS for c in row if c)  # 0 的格子留空
    assert written.count("") == sum(c == 0 for row in COUNTS for c in row)
    plt.close(fig)
    fig = cu.plot_confusion_matrix(LABELS, PREDS, CLASSES, normalize=True)
    written = [t.get_text() for t in fig.axes[0].texts]
    assert written[:4] == ["50%", "25%", "25%", ""]  # 苹果：对 2/4，认成香蕉、橙子各 1/4，从没认成葡萄
    assert "0%" not in written
    plt.close(fig)


def test_normalised_confusion_matrix_marks_tiny_but_nonzero_shares():
    import matplotlib.pyplot as plt

    labels = [0] * 201 + [1]
    preds = [0] * 200 + [1, 1]  # 201 张“甲”里只有 1 张被认成“乙”：0.5%，四舍五入会显示成 0%
    fig = cu.plot_confusion_matrix(labels, preds, ["甲", "乙"], normalize=True)
    assert [t.get_text() for t in fig.axes[0].texts] == ["100%", "<1%", "", "100%"]
    plt.close(fig)


# 平均精确率（AP）的手算小例子：3 个类别、5 个样本，“葡萄”在测试集里没有样本。
AP_CLASSES = ["苹果", "香蕉", "葡萄"]
AP_LABELS = np.array([0, 1, 0, 1, 0])
AP_PROBS = np.array([
    [0.9, 0.1, 0.0],  # 苹果 ✓
    [0.6, 0.3, 0.1],  # 香蕉，但苹果的概率排第 2
    [0.5, 0.4, 0.1],  # 苹果 ✓
    [0.1, 0.8, 0.1],  # 香蕉 ✓
    [0.2, 0.7, 0.1],  # 苹果，被判成香蕉
])
# 苹果按概率排序：0.9 ✓、0.6 ✗、0.5 ✓、0.2 ✓、0.1 ✗ -> AP = (1/1 + 2/3 + 3/4) / 3
# 香蕉按概率排序：0.8 ✓、0.7 ✗、0.4 ✗、0.3 ✓ -> AP = (1/1 + 2/4) / 2
AP_HAND = {"苹果": (1 + 2 / 3 + 3 / 4) / 3, "香蕉": (1 + 2 / 4) / 2}


def _ap_predictions():
    return cu.Predictions(AP_PROBS, AP_LABELS, AP_PROBS.argmax(axis=1), [f"{i}.jpg" for i in range(5)])


def test_average_precision_table_matches_hand_computation():
    table = cu.average_precision_table(_ap_predictions(), AP_CLASSES)
    assert list(table.index) == ["香蕉", "苹果", "葡萄", "宏平均"]  # 从低到高，没有样本的类别排最后
    assert table.loc["苹果", "AP"] == pytest.approx(AP_HAND["苹果"])
    assert table.loc["香蕉", "AP"] == pytest.approx(AP_HAND["香蕉"])
    assert np.isnan(table.loc["葡萄", "AP"]) and table.loc["葡萄", "样本数"] == 0
    assert table.loc["宏平均", "AP"] == pytest.approx((AP_HAND["苹果"] + AP_HAND["香蕉"]) / 2)  # 不计入葡萄
    assert table["样本数"].tolist() == [2, 3, 0, 5]


def test_pr_curves_draw_the_worst_classes_with_their_ap_and_the_operating_point():
    import matplotlib.pyplot as plt

    fig = cu.plot_pr_curves(_ap_predictions(), AP_CLASSES, worst=1)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [f"香蕉（AP {AP_HAND['香蕉']:.2f}）"]
    point = ax.lines[-1].get_xydata()[0]  # 香蕉被预测 2 次、对 1 次；2 个样本找到 1 个
    np.testing.assert_allclose(point, [1 / 2, 1 / 2])
    plt.close(fig)
    fig = cu.plot_pr_curves(_ap_predictions(), AP_CLASSES, classes=["苹果", "香蕉"])
    assert len(fig.axes[0].get_legend().get_texts()) == 2
    plt.close(fig)
    with pytest.raises(ValueError, match="不在这个模型的类别里"):
        cu.plot_pr_curves(_ap_predictions(), AP_CLASSES, classes=["西瓜"])


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
    assert table["图片"].tolist() == result.paths  # 仓库外的图片：完整路径
    assert table["真实类别"].tolist() == [dataset.classes[i] for i in result.labels]
    assert table["预测类别"].tolist() == [dataset.classes[i] for i in result.preds]
    np.testing.assert_allclose(table["概率-蓝莓"], result.probs[:, dataset.classes.index("蓝莓")], rtol=1e-6)
    assert table["是否正确"].sum() == (result.preds == result.labels).sum()


def test_predictions_csv_shows_repository_images_without_the_machine_path(tmp_path):
    from course_utils.paths import REPO_ROOT

    image = REPO_ROOT / "data" / "demo" / "val" / "柠檬" / "0001.jpg"
    result = cu.Predictions(np.array([[0.8, 0.2]]), np.array([0]), np.array([0]), [str(image)])
    table = pd.read_csv(cu.save_predictions_csv(result, ["柠檬", "芒果"], tmp_path / "p.csv"), encoding="utf-8-sig")
    assert table["图片"].tolist() == ["data/demo/val/柠檬/0001.jpg"]


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
    assert table.loc["最佳验证准确率", "取值"] == "50.0%"


def test_example_image_is_the_first_test_image_generated_on_demand(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))  # 空的数据目录：smoke 数据集当场生成
    path = cu.example_image(cu.resolve_settings("smoke"))
    test_dir = path.parent.parent
    assert test_dir.name == "val" and tmp_path in path.parents
    assert path.parent == sorted(p for p in test_dir.iterdir() if p.is_dir())[0]
    assert path == sorted(path.parent.iterdir())[0]


def test_predict_test_set_loads_the_checkpoint_and_scores_the_test_folder(tmp_path, monkeypatch):
    """05 的几步合在一起：检查点里的尺寸决定预处理，结果与手动 predict 一致，顺序与 val/ 相同。"""
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    settings = cu.resolve_settings("smoke")
    splits = cu.make_datasets(settings, cu.prepare_dataset(settings))
    torch.manual_seed(0)
    model = cu.build_model("resnet18", num_classes=len(splits.class_names), strategy="freeze", weights=None)
    meta = {**cu.training_meta(settings.replace(image_size=24, resize_size=28), splits.class_names),
            "arch": "resnet18", "strategy": "freeze", "num_classes": len(splits.class_names)}
    cu.save_checkpoint(cu.checkpoint_path("smoke", "freeze"), model, meta)

    result, class_names = cu.predict_test_set(settings, "freeze", torch.device("cpu"))
    assert class_names == splits.class_names
    assert result.paths == [str(path) for path, _ in splits.test_ds.samples]
    first = cu.predict_image(model.eval(), result.paths[0], cu.build_eval_transform(24, 28), class_names, "cpu", k=1)
    assert first["概率"].iloc[0] == pytest.approx(result.probs[0].max(), rel=1e-4)  # 尺寸取自检查点（24），不是档位的 32


def test_eval_transform_from_meta_uses_the_recorded_size_mean_and_std():
    meta = {"image_size": 8, "resize_size": 10, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    image = Image.new("RGB", (20, 16), (255, 0, 128))  # 纯色图：缩放、裁剪后每个像素的颜色不变
    tensor = cu.eval_transform_from_meta(meta)(image)
    assert tuple(tensor.shape) == (3, 8, 8)
    expected = (torch.tensor([255.0, 0.0, 128.0]) / 255 - 0.5) / 0.25  # 按检查点记下的均值和标准差归一化
    torch.testing.assert_close(tensor[:, 4, 4], expected, atol=1e-3, rtol=0)
