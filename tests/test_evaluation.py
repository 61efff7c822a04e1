"""评估与预测（05、07）：指标与手算的结果比较，图表用中文、画的是对的数，预测与评估用同一套预处理。

05 用 scikit-learn 直接算指标，这里用一个手算的小例子（有一个从没被预测到的类别）核对 05 里的那几个调用；
``most_confused_pairs`` 是 05 自己写的函数，从笔记本里取出来测。
"""

import ast
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, classification_report, confusion_matrix
from torch import nn
from torchvision.transforms import v2

import course_utils as cu
from course_utils.data import DatasetError
from course_utils.paths import NOTEBOOKS_DIR

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
F1 = [0.5, 0.5, 0.0, 0.0]  # 第二类：2 × 0.4 × (2/3) ÷ (0.4 + 2/3) = 0.5
SUPPORT = [4, 3, 2, 1]


def _report_table(labels, preds, class_names):
    """05 第 7 节的写法：classification_report -> 表格（每类一行，再加宏平均、加权平均）。"""
    report = classification_report(labels, preds, labels=list(range(len(class_names))), target_names=class_names,
                                   output_dict=True, zero_division=0)
    return pd.DataFrame(report).T.loc[[*class_names, "macro avg", "weighted avg"]]


def _draws_without_missing_glyphs(fig) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 缺字（中文显示成方框）时 matplotlib 会发警告
        fig.canvas.draw()


def _has_chinese(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def test_hand_computed_f1_of_the_second_class_is_one_half():
    assert 2 * PRECISION[1] * RECALL[1] / (PRECISION[1] + RECALL[1]) == pytest.approx(F1[1])


def test_the_classification_report_of_05_matches_the_hand_computation():
    table = _report_table(LABELS, PREDS, CLASSES)
    np.testing.assert_allclose(table.loc[CLASSES, "precision"], PRECISION)
    np.testing.assert_allclose(table.loc[CLASSES, "recall"], RECALL)
    np.testing.assert_allclose(table.loc[CLASSES, "f1-score"], F1)
    assert table.loc[CLASSES, "support"].tolist() == SUPPORT  # 葡萄没被预测到，也在表里
    macro, weighted = table.loc["macro avg"], table.loc["weighted avg"]
    assert macro["precision"] == pytest.approx((0.5 + 0.4) / 4)
    assert macro["f1-score"] == pytest.approx((0.5 + 0.5) / 4)  # 宏平均 F1 是各类 F1 的平均
    assert weighted["precision"] == pytest.approx((4 * 0.5 + 3 * 0.4) / 10)
    assert weighted["recall"] == pytest.approx(4 / 10)  # 加权平均的召回率就是准确率
    assert macro["support"] == weighted["support"] == 10


def test_without_labels_the_report_cannot_name_a_class_missing_from_both_lists():
    """05 传 labels=全部类别序号的原因：测试集里没有、也从没被预测到的类别，否则会让 target_names 对不上。"""
    labels, preds = [0, 1, 1], [0, 1, 0]
    with pytest.raises(ValueError):
        classification_report(labels, preds, target_names=["甲", "乙", "丙"], output_dict=True, zero_division=0)
    table = _report_table(labels, preds, ["甲", "乙", "丙"])
    assert table.loc["丙"].tolist() == [0.0, 0.0, 0.0, 0.0]


def test_confusion_matrix_of_05_matches_the_hand_computation():
    assert confusion_matrix(LABELS, PREDS, labels=list(range(4))).tolist() == COUNTS
    # 05 把张量直接交给 scikit-learn
    assert confusion_matrix(torch.tensor(LABELS), torch.tensor(PREDS), labels=list(range(4))).tolist() == COUNTS


def _notebook_function(notebook: str, name: str):
    """从笔记本的代码单元格里取出一个顶层函数，在只有 pandas 的命名空间里定义它。"""
    nb = json.loads((NOTEBOOKS_DIR / notebook).read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        source = "".join(cell["source"])
        if cell["cell_type"] != "code" or f"def {name}(" not in source:
            continue
        node = next(n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name == name)
        namespace = {"pd": pd}
        exec(ast.get_source_segment(source, node), namespace)
        return namespace[name]
    raise AssertionError(f"{notebook} 里没有 {name}")


def test_most_confused_pairs_of_05_match_the_hand_computation():
    most_confused_pairs = _notebook_function("05_evaluate.ipynb", "most_confused_pairs")
    counts = pd.DataFrame(COUNTS, index=pd.Index(CLASSES, name="真实类别"), columns=pd.Index(CLASSES, name="预测类别"))
    pairs = most_confused_pairs(counts, top=3)
    assert list(pairs.columns) == ["真实类别", "被预测为", "次数", "占该类比例"]
    # 橙子 -> 香蕉 2 次；其余都是 1 次，按真实类别、预测类别的顺序排
    assert pairs[["真实类别", "被预测为", "次数"]].values.tolist() == [
        ["橙子", "香蕉", 2], ["苹果", "香蕉", 1], ["苹果", "橙子", 1],
    ]
    np.testing.assert_allclose(pairs["占该类比例"], [2 / 2, 1 / 4, 1 / 4])
    assert most_confused_pairs(counts, top=100)["次数"].sum() == 10 - 4  # 全部错误：10 个样本里对了 4 个
    perfect = pd.DataFrame(np.diag([3, 2]), index=["甲", "乙"], columns=["甲", "乙"])
    assert most_confused_pairs(perfect).empty  # 没有错误时是空表，05 改为显示一句话


# ---------------------------------------------------------------- 混淆矩阵的图


def test_confusion_matrix_figure_shows_the_counts_with_chinese_labels():
    import matplotlib.pyplot as plt

    fig = cu.plot_confusion_matrix(LABELS, PREDS, CLASSES)
    _draws_without_missing_glyphs(fig)
    ax = fig.axes[0]
    assert ax.get_title() == "混淆矩阵（图片数）" and ax.get_xlabel() == "预测类别" and ax.get_ylabel() == "真实类别"
    shown = np.asarray(ax.collections[0].get_array()).reshape(4, 4)
    assert shown.tolist() == COUNTS
    assert [t.get_text() for t in ax.get_xticklabels()] == CLASSES
    assert [t.get_text() for t in ax.get_yticklabels()] == CLASSES
    written = [t.get_text() for t in ax.texts]
    assert sorted(t for t in written if t) == sorted(str(c) for row in COUNTS for c in row if c)  # 0 的格子留空
    assert written.count("") == sum(c == 0 for row in COUNTS for c in row)
    plt.close(fig)
    fig = cu.plot_confusion_matrix(torch.tensor(LABELS), torch.tensor(PREDS), CLASSES, normalize=True)
    assert fig.axes[0].get_title() == "混淆矩阵（按行归一化）"
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


# ---------------------------------------------------------------- 精确率–召回率曲线与 AP
# 3 个类别、5 个样本，“葡萄”在测试集里没有样本。
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


def test_hand_computed_ap_is_what_scikit_learn_computes_in_05():
    for index, name in enumerate(AP_CLASSES[:2]):
        assert average_precision_score(AP_LABELS == index, AP_PROBS[:, index]) == pytest.approx(AP_HAND[name])


def test_pr_curves_show_the_ap_of_scikit_learn_and_the_operating_point():
    import matplotlib.pyplot as plt

    fig = cu.plot_pr_curves(torch.tensor(AP_PROBS), torch.tensor(AP_LABELS), AP_CLASSES, classes=["香蕉", "苹果"])
    _draws_without_missing_glyphs(fig)
    ax = fig.axes[0]
    assert _has_chinese(ax.get_title()) and ax.get_xlabel() == "召回率" and ax.get_ylabel() == "精确率"
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    expected = [average_precision_score(AP_LABELS == AP_CLASSES.index(n), AP_PROBS[:, AP_CLASSES.index(n)])
                for n in ("香蕉", "苹果")]
    assert legend == [f"香蕉（AP {expected[0]:.2f}）", f"苹果（AP {expected[1]:.2f}）"]
    assert legend == [f"香蕉（AP {AP_HAND['香蕉']:.2f}）", f"苹果（AP {AP_HAND['苹果']:.2f}）"]
    banana_curve, banana_point, apple_curve, apple_point = ax.lines
    # 香蕉被预测 2 次（第 4、5 个样本）、对 1 次；2 个样本找到 1 个
    np.testing.assert_allclose(banana_point.get_xydata()[0], [1 / 2, 1 / 2])
    # 苹果被预测 3 次（第 1、2、3 个样本）、对 2 次；3 个样本找到 2 个
    np.testing.assert_allclose(apple_point.get_xydata()[0], [2 / 3, 2 / 3])
    # 苹果的曲线在阈值 0.2 时召回率到 1（精确率 3/4）；再降到 0.1 只会把精确率拉到 3/5，不画
    points = [tuple(np.round(p, 6)) for p in apple_curve.get_xydata()]
    assert (1.0, 0.75) in points and (1.0, 0.6) not in points
    plt.close(fig)


def test_pr_curves_refuse_unknown_classes_and_note_classes_without_samples():
    import matplotlib.pyplot as plt

    with pytest.raises(ValueError, match="西瓜 不在这个模型的类别里"):
        cu.plot_pr_curves(AP_PROBS, AP_LABELS, AP_CLASSES, classes=["西瓜"])
    fig = cu.plot_pr_curves(AP_PROBS, AP_LABELS, AP_CLASSES, classes=["葡萄"])
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["葡萄（测试集里没有这一类）"]
    plt.close(fig)


# ---------------------------------------------------------------- 分错的图片


def test_show_misclassified_shows_the_most_confident_mistakes_first(tmp_path):
    import matplotlib.pyplot as plt

    paths = []
    for i in range(5):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(paths[-1])
    probs = torch.tensor([[0.9, 0.1], [0.4, 0.6], [0.3, 0.7], [0.05, 0.95], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 0, 1, 0])  # 分错的是第 1、2、4 张，置信度 60%、70%、80%
    fig = cu.show_misclassified(probs, labels, paths, ["甲", "乙"], n=5)
    _draws_without_missing_glyphs(fig)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["真实：甲\n预测：乙（80%）", "真实：甲\n预测：乙（70%）", "真实：甲\n预测：乙（60%）"]
    assert sum(bool(ax.images) for ax in fig.axes) == 3
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    assert int(np.asarray(shown[0])[0, 0, 0]) == 40 * 4  # 第一格是第 4 张图（最自信的错误）
    plt.close(fig)
    fig = cu.show_misclassified(probs, labels, paths, ["甲", "乙"], n=1)
    assert [ax.get_title() for ax in fig.axes if ax.get_title()] == ["真实：甲\n预测：乙（80%）"]
    plt.close(fig)
    fig = cu.show_misclassified(probs, probs.argmax(dim=1), paths, ["甲", "乙"])  # 全对
    assert "没有分错的图片" in [t.get_text() for t in fig.axes[0].texts]
    plt.close(fig)


# ---------------------------------------------------------------- 评估预处理与单张图片预测

META = {"image_size": 8, "resize_size": 10, "mean": [0.5, 0.4, 0.3], "std": [0.25, 0.2, 0.1]}


def test_checkpoint_transform_is_the_eval_transform_of_03_with_the_checkpoints_numbers():
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (16, 20, 3), dtype=np.uint8))  # 带噪声：缩放和裁剪的位置都有影响
    transform = cu.checkpoint_transform(META)
    _, eval_tf = cu.build_transforms(8, 10, META["mean"], META["std"])
    tensor = transform(image)
    assert tuple(tensor.shape) == (3, 8, 8)
    torch.testing.assert_close(tensor, eval_tf(image), rtol=0, atol=0)
    torch.testing.assert_close(transform(image), tensor, rtol=0, atol=0)  # 没有随机性
    written_out = v2.Compose([v2.Resize(10), v2.CenterCrop(8), v2.ToImage(), v2.ToDtype(torch.float32, scale=True),
                              v2.Normalize(META["mean"], META["std"])])
    torch.testing.assert_close(tensor, written_out(image), rtol=0, atol=0)
    plain = cu.checkpoint_transform(META)(Image.new("RGB", (20, 16), (255, 0, 128)))  # 纯色：每个像素的值可以手算
    expected = (torch.tensor([255.0, 0.0, 128.0]) / 255 - torch.tensor(META["mean"])) / torch.tensor(META["std"])
    torch.testing.assert_close(plain[:, 4, 4], expected, atol=1e-3, rtol=0)


def _colour_model():
    """手搭的小模型：每个通道的平均亮度 × 10 就是这三类的得分（红、绿、蓝）。"""
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    with torch.no_grad():
        model[2].weight.copy_(10 * torch.eye(3))
        model[2].bias.zero_()
    return model.train()  # 故意留在训练模式：predict_image 自己要切到评估模式


TO_TENSOR = v2.Compose([v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
COLOURS = ["红", "绿", "蓝"]


def _softmax(scores):
    exps = [math.exp(s) for s in scores]
    return [e / sum(exps) for e in exps]


def test_predict_image_returns_the_top_k_of_a_hand_made_model(tmp_path):
    path = tmp_path / "橙色.png"
    Image.new("RGB", (6, 4), (200, 100, 30)).save(path)
    model = _colour_model()
    expected = _softmax([10 * 200 / 255, 10 * 100 / 255, 10 * 30 / 255])
    top = cu.predict_image(model, path, TO_TENSOR, COLOURS, "cpu", k=2)
    assert [name for name, _ in top] == ["红", "绿"]
    np.testing.assert_allclose([p for _, p in top], expected[:2], rtol=1e-5)
    assert all(isinstance(p, float) for _, p in top)  # 普通的小数，不是张量
    assert not model.training  # 切到了评估模式
    everything = cu.predict_image(model, path, TO_TENSOR, COLOURS, "cpu", k=3)
    assert [name for name, _ in everything] == ["红", "绿", "蓝"]
    assert sum(p for _, p in everything) == pytest.approx(1.0)


def test_predict_image_opens_any_image_mode_as_rgb_like_imagefolder(tmp_path):
    path = tmp_path / "灰.png"
    Image.new("L", (5, 5), 128).save(path)  # 灰度图：转成 RGB 后三个通道相同，三类的概率也相同
    top = cu.predict_image(_colour_model(), path, TO_TENSOR, COLOURS, "cpu", k=3)
    np.testing.assert_allclose([p for _, p in top], [1 / 3] * 3, rtol=1e-5)


def test_plot_topk_draws_one_bar_per_class_with_its_probability():
    import matplotlib.pyplot as plt

    fig = cu.plot_topk([("草莓", 0.7), ("杨梅", 0.2), ("荔枝", 0.1)], title="预测结果：草莓")
    _draws_without_missing_glyphs(fig)
    ax = fig.axes[0]
    assert ax.get_title() == "预测结果：草莓" and ax.get_xlabel() == "概率"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["荔枝", "杨梅", "草莓"]  # 最可能的在最上面
    assert [round(p.get_width(), 6) for p in ax.patches] == [0.1, 0.2, 0.7]
    assert "70.0%" in [t.get_text() for t in ax.texts]
    plt.close(fig)


def test_show_model_input_undoes_the_normalisation(tmp_path):
    import matplotlib.pyplot as plt

    path = tmp_path / "red.png"
    Image.new("RGB", (40, 30), (200, 100, 50)).save(path)
    fig = cu.show_model_input(path, cu.checkpoint_transform(META), META["mean"], META["std"])
    _draws_without_missing_glyphs(fig)
    shown = fig.axes[1].images[0].get_array()
    assert shown.shape == (8, 8, 3)
    np.testing.assert_allclose(shown[4, 4], np.array([200, 100, 50]) / 255, atol=1e-5)
    assert fig.axes[0].get_title() == "原图（40×30）" and fig.axes[1].get_title() == "模型看到的（8×8）"
    plt.close(fig)


def test_checkpoint_summary_is_honest_about_random_weights():
    meta = {"arch": "resnet18", "strategy": "scratch", "profile": "smoke", "num_classes": 3,
            "image_size": 32, "resize_size": 36, "best_epoch": 1, "best_val_acc": 0.5, "weights": None}
    table = cu.checkpoint_summary(meta)
    assert table.loc["初始权重", "取值"] == "随机初始化"
    assert table.loc["迁移策略", "取值"] == "从头训练（scratch）"
    assert table.loc["最佳验证准确率", "取值"] == "50.0%"


# ---------------------------------------------------------------- 05、07 的数据：检查点的尺寸、不打乱的测试集


@pytest.fixture
def smoke_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("COURSE_DATA_DIR", str(tmp_path))  # 空的数据目录：smoke 数据集当场生成
    return tmp_path


def test_example_image_is_the_first_test_image_generated_on_demand(smoke_data_dir):
    path = cu.data.example_image(cu.resolve_settings("smoke"))
    test_dir = path.parent.parent
    assert test_dir.name == "val" and smoke_data_dir in path.parents
    assert path.parent == sorted(p for p in test_dir.iterdir() if p.is_dir())[0]
    assert path == sorted(path.parent.iterdir())[0]


def test_checkpoint_data_uses_the_checkpoints_size_and_keeps_the_test_order(smoke_data_dir):
    settings = cu.resolve_settings("smoke")
    class_names = cu.dataset_classes("smoke")
    meta = {**META, "image_size": 24, "resize_size": 28, "class_names": class_names}  # 档位自己的是 32 像素
    data = cu.checkpoint_data(settings, meta)
    images, _ = next(iter(data.test_loader))
    assert tuple(images.shape[1:]) == (3, 24, 24)
    path, _ = data.test_ds.samples[0]
    torch.testing.assert_close(images[0], cu.checkpoint_transform(meta)(Image.open(path).convert("RGB")))
    # 05 把 data.test_ds.samples 的第 i 个路径当作第 i 张图：测试集的 DataLoader 必须不打乱
    _, labels = cu.evaluate(_colour_model(), data.test_loader, "cpu")
    assert labels.tolist() == [label for _, label in data.test_ds.samples]
    with pytest.raises(DatasetError, match="类别与检查点不一致"):
        cu.checkpoint_data(settings, {**meta, "class_names": class_names[::-1]})
