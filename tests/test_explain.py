"""Grad-CAM（explain.py）：热力图落在真正决定得分的那一半图上；与按定义手算的结果一致；
冻结的模型也能算，算完模型原样不变；各种网络的目标层；画图没有缺字。"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import course_utils as cu
from course_utils.evaluate import Predictions

pytestmark = pytest.mark.usefixtures("one_torch_thread", "chinese_font")  # 见 conftest.py


# ---------------------------------------------------------------- 一个只看半边图的小网络


class HalfMask(nn.Module):
    """通道 0、1 只保留左半边，通道 2、3 只保留右半边。"""

    def forward(self, x):
        mask = torch.zeros_like(x)
        half = x.shape[-1] // 2
        mask[:, :2, :, :half] = 1
        mask[:, 2:, :, half:] = 1
        return x * mask


class HalfNet(nn.Module):
    """类别 0 的得分只来自左半边（通道 0、1），类别 1 只来自右半边（通道 2、3）。"""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU(), HalfMask())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.abs_()  # 正的输入 -> 正的特征，热力图不会碰巧全是 0
            self.features[0].bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]))

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


def _half_net():
    torch.manual_seed(0)
    return HalfNet()


def _left_share(heatmaps):
    """每张热力图落在左半边的比例。"""
    half = heatmaps.shape[-1] // 2
    return heatmaps[..., :half].sum(dim=(1, 2)) / heatmaps.sum(dim=(1, 2))


def test_heatmap_of_a_class_lies_on_the_half_that_decides_its_score():
    net = _half_net()
    images = torch.rand(3, 3, 32, 48)  # 高和宽不同：上采样时把高、宽弄反就会出错
    left = cu.grad_cam(net, images, targets=0, layer=net.features, device="cpu")
    right = cu.grad_cam(net, images, targets=np.ones(6, dtype=int)[::-2], layer=net.features, device="cpu")  # 倒序切片的数组
    assert left.shape == right.shape == (3, 32, 48)
    assert float(left.min()) >= 0 and float(left.max()) <= 1
    assert torch.allclose(left.flatten(1).amax(dim=1), torch.ones(3))  # 每张各自归一化，最大值是 1
    assert (_left_share(left) > 0.9).all()
    assert (_left_share(right) < 0.1).all()


def test_without_targets_each_image_explains_its_predicted_class():
    net = _half_net()
    images = torch.rand(2, 3, 32, 32) * 0.1
    images[0, :, :, :16] += 1  # 第一张左边亮：预测类别 0
    images[1, :, :, 16:] += 1  # 第二张右边亮：预测类别 1
    assert net(images).argmax(dim=1).tolist() == [0, 1]
    heatmaps = cu.grad_cam(net, images, layer=net.features, device="cpu")
    assert _left_share(heatmaps)[0] > 0.9 and _left_share(heatmaps)[1] < 0.1
    expected = cu.grad_cam(net, images, targets=torch.tensor([0, 1]), layer=net.features, device="cpu")
    assert torch.equal(heatmaps, expected)


def _reference_grad_cam(model, layer, images, targets):
    """按定义手算：得分对特征图求梯度 -> 梯度按空间平均得到通道权重 -> 加权求和 -> ReLU -> 放大 -> 除以最大值。"""
    saved = {}
    handle = layer.register_forward_hook(lambda module, args, output: saved.update(maps=output))
    inputs = images.clone().requires_grad_(True)
    logits = model(inputs)
    handle.remove()
    score = logits[torch.arange(len(images)), targets].sum()
    (grads,) = torch.autograd.grad(score, saved["maps"])
    weights = grads.mean(dim=(2, 3), keepdim=True)
    cams = F.relu((weights * saved["maps"]).sum(dim=1, keepdim=True))
    cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear")[:, 0]
    return (cams / cams.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]).detach()


def test_resnet_heatmaps_match_the_definition_computed_by_hand():
    torch.manual_seed(1)
    model = cu.build_model("resnet18", num_classes=3, strategy="finetune", weights=None).eval()
    images = torch.randn(2, 3, 96, 96)  # layer4 输出 3×3
    targets = torch.tensor([2, 0])
    heatmaps = cu.grad_cam(model, images, targets=targets, device="cpu")
    expected = _reference_grad_cam(model, model.layer4, images, targets)
    assert heatmaps.flatten(1).amax(dim=1).gt(0).all(), "随机网络也应该有非零的热力图，否则这个比较没有意义"
    torch.testing.assert_close(heatmaps, expected, atol=1e-4, rtol=1e-4)


# ---------------------------------------------------------------- 算完之后模型原样不变


def _snapshot(model):
    return {
        "state": {name: value.clone() for name, value in model.state_dict().items()},  # 参数和 BN 统计量
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "training": {name: m.training for name, m in model.named_modules()},
    }


@pytest.mark.parametrize("strategy", ["freeze", "finetune"])
def test_grad_cam_leaves_the_model_exactly_as_it_was(strategy):
    torch.manual_seed(0)
    model = cu.build_model("resnet18", num_classes=4, strategy=strategy, weights=None)
    model.train()  # 最容易出问题的状态：训练模式下 BatchNorm 会更新统计量
    before = _snapshot(model)
    assert any(before["training"].values()) and (strategy != "freeze" or not all(before["requires_grad"].values()))
    images = torch.randn(3, 3, 64, 64)
    heatmaps = cu.grad_cam(model, images, device="cpu")
    with torch.inference_mode():  # 在不求梯度的环境里（例如刚用 cu.predict 预测完）调用也能算
        again = cu.grad_cam(model, images.clone(), device="cpu")
    assert heatmaps.shape == (3, 64, 64) and torch.isfinite(heatmaps).all()
    assert float(heatmaps.min()) >= 0 and float(heatmaps.max()) <= 1
    torch.testing.assert_close(heatmaps, again)
    after = _snapshot(model)
    assert after["requires_grad"] == before["requires_grad"]
    assert after["training"] == before["training"]
    for name, value in before["state"].items():
        assert torch.equal(after["state"][name], value), f"{name} 被改动了"
    assert all(p.grad is None for p in model.parameters()), "参数上不应留下梯度"
    assert not images.requires_grad and images.grad is None


# ---------------------------------------------------------------- 目标层


def test_target_layers_of_supported_architectures():
    resnet = cu.build_model("resnet18", num_classes=3, strategy="scratch")
    assert cu.cam_target_layer(resnet, "resnet18") is resnet.layer4
    mobile = cu.build_model("mobilenet_v3_small", num_classes=3, strategy="freeze", weights=None)
    assert cu.cam_target_layer(mobile, "mobilenet_v3_small") is mobile.features[-1]
    heatmaps = cu.grad_cam(mobile, torch.randn(2, 3, 64, 48), arch="mobilenet_v3_small", targets=1, device="cpu")
    assert heatmaps.shape == (2, 64, 48) and float(heatmaps.max()) <= 1
    sizes = cu.feature_map_sizes(resnet, resnet.layer4, (224, 112, 32), "cpu")
    assert sizes[["通道数", "高", "宽"]].values.tolist() == [[512, 7, 7], [512, 4, 4], [512, 1, 1]]
    assert sizes["每格约对应（像素）"].tolist() == ["32×32", "28×28", "32×32"]
    assert resnet.training  # 量形状时临时切到 eval，之后恢复


def test_unknown_architecture_gets_a_chinese_hint():
    with pytest.raises(ValueError, match="最后一个卷积块.*layer="):
        cu.cam_target_layer(nn.Sequential(nn.Conv2d(3, 4, 3)), "vgg16")


# ---------------------------------------------------------------- 挑图与标题


def _predictions():
    # 6 张图、3 个类别：序号 0、1、3、5 分对，2、4 分错
    probs = np.array([[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1],
                      [0.1, 0.8, 0.1], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8]])
    labels = np.array([0, 0, 0, 1, 2, 2])
    return Predictions(probs, labels, probs.argmax(axis=1), [f"{k}.png" for k in range(6)])


def test_pick_examples_takes_classes_in_turn_most_confident_first():
    predictions = _predictions()
    assert cu.pick_examples(predictions, correct=True, n=3) == [0, 3, 5]  # 每类一张
    assert cu.pick_examples(predictions, correct=True, n=8) == [0, 3, 5, 1]
    assert cu.pick_examples(predictions, correct=False, n=8) == [2, 4]
    assert cu.pick_examples(predictions, correct=None, n=4) == [0, 3, 5, 2]


def test_titles_show_truth_prediction_and_confidence_and_mark_mistakes():
    predictions = _predictions()
    titles, colors = cu.cam_titles(predictions.probs[[0, 2]], ["苹果", "香蕉", "橙子"], predictions.labels[[0, 2]])
    assert titles == ["真实：苹果\n预测：苹果（90%）", "真实：苹果\n预测：香蕉（70%）"]
    assert colors == ["black", "firebrick"]
    assert cu.cam_titles(torch.tensor([[0.25, 0.75]]), ["甲", "乙"])[0] == ["预测：乙（75%）"]


# ---------------------------------------------------------------- 画图


def _draw_without_missing_glyphs(fig):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 缺字（中文显示成方框）时 matplotlib 会发警告
        fig.canvas.draw()


def test_plot_grad_cam_overlays_each_heatmap_on_its_image_with_chinese_titles():
    images = torch.randn(3, 3, 20, 30)
    heatmaps = torch.rand(3, 20, 30)
    titles = ["真实：苹果\n预测：苹果（90%）", "真实：香蕉\n预测：柠檬（55%）", "预测：西瓜（71%）"]
    fig = cu.plot_grad_cam(images, heatmaps, titles, ncols=2)
    _draw_without_missing_glyphs(fig)
    assert len(fig.axes) == 3  # 2×2 的网格里多出的格子被删掉
    for k, ax in enumerate(fig.axes):
        assert ax.get_title() == titles[k]
        assert len(ax.get_xticks()) == 0 and len(ax.get_yticks()) == 0
        picture, overlay = ax.images
        np.testing.assert_allclose(picture.get_array(), cu.denormalize(images[k]).permute(1, 2, 0).numpy())
        np.testing.assert_allclose(overlay.get_array(), heatmaps[k].numpy())
        assert overlay.get_alpha() == 0.5
    plt.close(fig)


def test_plot_grad_cam_with_no_images_says_so():
    fig = cu.plot_grad_cam(torch.zeros(0, 3, 0, 0), torch.zeros(0, 0, 0), [])
    assert [t.get_text() for t in fig.axes[0].texts] == ["没有符合条件的图片"]
    plt.close(fig)


def _write_images(folder, count):
    paths = []
    for k in range(count):
        path = folder / f"图{k}.png"
        Image.fromarray(np.random.default_rng(k).integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_compare_grad_cam_draws_one_row_per_model_with_chinese_row_labels(tmp_path):
    paths = _write_images(tmp_path, 2)
    meta = {"arch": "resnet18", "class_names": ["苹果", "香蕉", "柠檬"], "image_size": 64, "resize_size": 72,
            "mean": list(cu.IMAGENET_MEAN), "std": list(cu.IMAGENET_STD), "weights_note": "未使用预训练权重：随机初始化",
            "best_val_acc": 0.5}
    torch.manual_seed(0)
    models = {s: (cu.build_model("resnet18", num_classes=3, strategy=s, weights=None).eval(), meta)
              for s in ("freeze", "finetune")}
    fig = cu.compare_grad_cam(models, paths, [0, 2], device="cpu")
    _draw_without_missing_glyphs(fig)
    assert len(fig.axes) == 4
    assert [ax.get_ylabel() for ax in fig.axes] == [cu.strategy_label("freeze"), "", cu.strategy_label("finetune"), ""]
    assert all(ax.get_title().startswith(("真实：苹果\n", "真实：柠檬\n")) for ax in fig.axes)
    plt.close(fig)
    table = cu.strategies_table(models)
    assert table.loc[cu.strategy_label("freeze")].tolist() == ["未使用预训练权重：随机初始化", "50.0%"]


def test_load_strategies_skips_a_missing_full_checkpoint_with_a_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path))
    assert cu.load_strategies("full", ["freeze", "finetune"], "cpu") == {}  # full 档位不会自动训练
    printed = capsys.readouterr().out
    assert printed.count("跳过") == 2 and "04_train.ipynb" in printed
    assert cu.strategies_table({}).empty
    fig = cu.compare_grad_cam({}, [], [], device="cpu")
    assert [t.get_text() for t in fig.axes[0].texts] == ["没有可以比较的模型"]
    plt.close(fig)
