"""Grad-CAM（explain.py）：热力图落在真正决定得分的那一半图上；两种网络都与按定义手算的结果一致；
真的 ImageNet 版 Lite0 把“猫”的热力图放在猫上、“咖啡”的放在咖啡上；冻结的模型也能算，算完模型原样不变；画图没有缺字。"""

import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

import course_utils as cu
from course_utils.explain import cam_target_layer, grad_cam, plot_feature_grid, plot_grad_cam

pytestmark = pytest.mark.usefixtures("one_torch_thread", "chinese_font")  # 见 conftest.py

ARCHS = ("resnet18", "efficientnet_lite0")


def _model(arch, strategy="finetune", num_classes=3, seed=0):
    torch.manual_seed(seed)
    model, _, _ = cu.build_model(arch, num_classes, strategy, weights=None)
    return model


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
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4, padding=1), nn.ReLU(), HalfMask())
        self.fc = nn.Linear(4, 2, bias=False)
        with torch.no_grad():
            self.features[0].weight.abs_()  # 正的输入 -> 正的特征，热力图不会碰巧全是 0
            self.features[0].bias.zero_()
            self.fc.weight.copy_(torch.tensor([[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]))

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


def _left_share(heatmaps):
    """每张热力图落在左半边的比例。"""
    half = heatmaps.shape[-1] // 2
    return heatmaps[..., :half].sum(dim=(1, 2)) / heatmaps.sum(dim=(1, 2))


def test_heatmap_of_a_class_lies_on_the_half_that_decides_its_score():
    net = HalfNet()
    images = torch.rand(3, 3, 32, 48)  # 高和宽不同：上采样时把高、宽弄反就会出错
    left = grad_cam(net, images, 0, layer=net.features, device="cpu")
    right = grad_cam(net, images, np.ones(6, dtype=int)[::-2], layer=net.features, device="cpu")  # 倒序切片的数组
    assert left.shape == right.shape == (3, 32, 48)
    assert float(left.min()) >= 0 and float(left.max()) <= 1
    torch.testing.assert_close(left.flatten(1).amax(dim=1), torch.ones(3))  # 每张各自归一化，最大值是 1
    assert (_left_share(left) > 0.9).all() and (_left_share(right) < 0.1).all()


def test_without_targets_each_image_explains_its_predicted_class():
    net = HalfNet()
    images = torch.rand(2, 3, 32, 32) * 0.1
    images[0, :, :, :16] += 1  # 第一张左边亮：预测类别 0
    images[1, :, :, 16:] += 1  # 第二张右边亮：预测类别 1
    assert net(images).argmax(dim=1).tolist() == [0, 1]
    heatmaps = grad_cam(net, images, layer=net.features, device="cpu")
    assert _left_share(heatmaps)[0] > 0.9 and _left_share(heatmaps)[1] < 0.1
    assert torch.equal(heatmaps, grad_cam(net, images, [0, 1], layer=net.features, device="cpu"))


# ---------------------------------------------------------------- 与定义一致（两种网络）


def _reference_grad_cam(model, layer, images, targets):
    """按定义手算：得分对特征图求梯度 -> 梯度按空间平均得到通道权重 -> 加权求和 -> ReLU -> 放大 -> 除以最大值。"""
    saved = {}
    handle = layer.register_forward_hook(lambda module, args, output: saved.update(maps=output))
    logits = model(images.clone().requires_grad_(True))
    handle.remove()
    (grads,) = torch.autograd.grad(logits[torch.arange(len(images)), targets].sum(), saved["maps"])
    cams = F.relu((grads.mean(dim=(2, 3), keepdim=True) * saved["maps"]).sum(dim=1, keepdim=True))
    cams = F.interpolate(cams, size=images.shape[-2:], mode="bilinear")[:, 0]
    return (cams / cams.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]).detach()


@pytest.mark.parametrize("arch", ARCHS)
def test_heatmaps_match_the_definition_computed_by_hand(arch):
    model = _model(arch).eval()
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))  # 最后的特征图 3×3
    targets = torch.tensor([2, 0])
    heatmaps = grad_cam(model, images, targets, device="cpu")
    expected = _reference_grad_cam(model, cam_target_layer(model), images, targets)
    assert heatmaps.flatten(1).amax(dim=1).gt(0).all(), "随机网络也应该有非零的热力图，否则这个比较没有意义"
    torch.testing.assert_close(heatmaps, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ARCHS)
def test_the_target_layer_outputs_the_last_feature_map(arch):
    """目标层的输出就是 forward_features（分类头和全局平均池化之前）的结果：ResNet 的 layer4、Lite0 的 bn2（BN + ReLU6）。"""
    model = _model(arch).eval()
    layer = cam_target_layer(model)
    assert layer is (model.layer4 if arch == "resnet18" else model.bn2)
    saved = {}
    handle = layer.register_forward_hook(lambda module, args, output: saved.update(maps=output))
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        logits = model(images)
    handle.remove()
    assert saved["maps"].shape == (1, 512 if arch == "resnet18" else 1280, 2, 2)
    head = cu.models.head_of(model)
    with torch.no_grad():  # 特征图取平均再过分类头，正好是模型的输出：它后面没有别的层了
        torch.testing.assert_close(head(saved["maps"].mean(dim=(2, 3))), logits, atol=1e-5, rtol=1e-5)
    if arch == "efficientnet_lite0":
        assert float(saved["maps"].min()) >= 0 and float(saved["maps"].max()) <= 6  # ReLU6 之后


def test_unknown_architecture_gets_a_chinese_hint():
    with pytest.raises(ValueError, match="最后一张特征图.*layer="):
        cam_target_layer(nn.Sequential(nn.Conv2d(3, 4, 3)))


def test_pretrained_lite0_looks_at_the_cat_for_cat_and_at_the_coffee_for_espresso():
    """真的 ImageNet 权重：左半边是猫、右半边是咖啡的拼图上，“虎斑猫”的热力图在左边，“浓缩咖啡”的在右边。"""
    import skimage.data
    from torchvision.models import ResNet18_Weights

    categories = ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet-1k 的类名，Lite0 用同样的顺序
    model, info = cu.load_pretrained("efficientnet_lite0", weights="imagenet")
    _, eval_tf = cu.build_transforms(160, 160, info["mean"], info["std"])
    photo = lambda name: eval_tf(Image.open(Path(skimage.data.__file__).parent / name).convert("RGB"))  # noqa: E731
    wide = torch.cat([photo("chelsea.png"), photo("coffee.png")], dim=2).unsqueeze(0).repeat(2, 1, 1, 1)
    heatmaps = grad_cam(model, wide, [categories.index("tabby"), categories.index("espresso")], device="cpu")
    cat_share, coffee_share = _left_share(heatmaps).tolist()
    assert cat_share > 0.8 and coffee_share < 0.2


# ---------------------------------------------------------------- 算完之后模型原样不变


def _snapshot(model):
    return {
        "state": {name: value.clone() for name, value in model.state_dict().items()},  # 参数和 BN 统计量
        "requires_grad": {name: p.requires_grad for name, p in model.named_parameters()},
        "training": {name: m.training for name, m in model.named_modules()},
    }


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("strategy", ["freeze", "finetune"])
def test_grad_cam_leaves_the_model_exactly_as_it_was(arch, strategy):
    model = _model(arch, strategy, num_classes=4)
    cu.set_train_mode(model)  # 最容易出问题的状态：训练模式下 BatchNorm 会更新统计量
    before = _snapshot(model)
    assert any(before["training"].values()) and (strategy != "freeze" or not all(before["requires_grad"].values()))
    images = torch.randn(3, 3, 64, 64)
    heatmaps = grad_cam(model, images, device="cpu")
    with torch.inference_mode():  # 在不求梯度的环境里调用也能算
        again = grad_cam(model, images.clone(), device="cpu")
    assert heatmaps.shape == (3, 64, 64) and torch.isfinite(heatmaps).all()
    torch.testing.assert_close(heatmaps, again)
    after = _snapshot(model)
    assert after["requires_grad"] == before["requires_grad"] and after["training"] == before["training"]
    for name, value in before["state"].items():
        assert torch.equal(after["state"][name], value), f"{name} 被改动了"
    assert all(p.grad is None for p in model.parameters()), "参数上不应留下梯度"
    assert not images.requires_grad


# ---------------------------------------------------------------- 画图


def _draw_without_missing_glyphs(fig):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 缺字（中文显示成方框）时 matplotlib 会发警告
        fig.canvas.draw()


def test_plot_grad_cam_overlays_each_heatmap_on_its_image_with_chinese_titles():
    mean, std = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]
    images, heatmaps = torch.randn(3, 3, 20, 30), torch.rand(3, 20, 30)
    titles = ["真实：苹果\n预测：苹果（90%）", "真实：香蕉\n预测：柠檬（55%）", "预测：西瓜（71%）"]
    fig = plot_grad_cam(images, heatmaps, titles, mean=mean, std=std, ncols=2,
                        title_colors=["black", "firebrick", "black"])
    _draw_without_missing_glyphs(fig)
    assert len(fig.axes) == 3  # 2×2 的网格里多出的格子被删掉
    for k, ax in enumerate(fig.axes):
        assert ax.get_title() == titles[k] and len(ax.get_xticks()) == 0
        picture, overlay = ax.images
        expected = (images[k] * 0.25 + 0.5).clamp(0, 1).permute(1, 2, 0).numpy()  # 撤销归一化，手算
        np.testing.assert_allclose(picture.get_array(), expected, rtol=1e-6)
        np.testing.assert_allclose(overlay.get_array(), heatmaps[k].numpy())
        assert overlay.get_alpha() == 0.5
    assert fig.axes[1].title.get_color() == "firebrick"
    plt.close(fig)
    fig = plot_grad_cam(images[:2].repeat(2, 1, 1, 1), heatmaps[:2].repeat(2, 1, 1), titles[:2] * 2, mean=mean, std=std,
                        ncols=2, row_labels=["冻结主干", "微调全部层"])
    assert [ax.get_ylabel() for ax in fig.axes] == ["冻结主干", "", "微调全部层", ""]
    plt.close(fig)


def test_feature_grid_draws_one_cell_per_feature_map_position(tmp_path):
    path = tmp_path / "图.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)).save(path)
    fig = plot_feature_grid(path, {224: (7, 7), 112: (4, 4), 32: (1, 1)})
    _draw_without_missing_glyphs(fig)
    assert [ax.get_title() for ax in fig.axes] == ["224×224 像素 → 7×7 格", "112×112 像素 → 4×4 格", "32×32 像素 → 1×1 格"]
    assert [len(ax.lines) for ax in fig.axes] == [12, 6, 0]  # 7×7 格：横竖各 6 条分隔线
    assert fig.axes[1].images[0].get_array().shape[:2] == (112, 112)
    plt.close(fig)


def test_no_images_give_no_heatmaps_and_a_figure_that_says_so():
    """例如测试集上一张都没分错：算出 0 张热力图，图里写一行说明，而不是报错。"""
    model = _model("efficientnet_lite0")
    heatmaps = grad_cam(model, torch.zeros(0, 3, 32, 32), [], device="cpu")
    assert heatmaps.shape == (0, 32, 32)
    fig = plot_grad_cam(torch.zeros(0, 3, 32, 32), heatmaps, [], mean=[0.5] * 3, std=[0.5] * 3)
    assert [t.get_text() for t in fig.axes[0].texts] == ["没有符合条件的图片"]
    plt.close(fig)
