"""换成自己的数据集：环境变量 COURSE_DATASET 指向一个 train/、val/ 结构的目录，整个课程都用它。"""

import re

import nbformat
import numpy as np
import papermill as pm
import pytest
from PIL import Image

import course_utils as cu
from course_utils.data import DatasetError
from course_utils.paths import NOTEBOOKS_DIR

OWN_CLASSES = {"红苹果": (200, 30, 30), "青柠檬": (60, 200, 60), "蓝莓": (40, 40, 190)}


@pytest.fixture
def own_dataset(tmp_path):
    """三类纯色加噪声的小图：train/ 每类 10 张，val/ 每类 4 张。"""
    rng = np.random.default_rng(0)
    root = tmp_path / "我的数据"
    for split, count in (("train", 10), ("val", 4)):
        for name, colour in OWN_CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(np.array(colour) + rng.normal(0, 30, (40, 40, 3)), 0, 255).astype("uint8")
                Image.fromarray(pixels).save(folder / f"{i}.jpg")
    return root


def test_course_dataset_variable_replaces_the_profile_dataset_unless_one_is_given(monkeypatch, own_dataset):
    assert cu.resolve_settings("demo").dataset == "demo"
    monkeypatch.setenv("COURSE_DATASET", f" {own_dataset} ")
    assert cu.resolve_settings("demo").dataset == str(own_dataset)
    assert cu.resolve_settings("smoke", dataset=None).dataset == str(own_dataset)  # None：没有明确指定
    assert cu.resolve_settings("demo", dataset="smoke").dataset == "smoke"  # 明确指定的优先
    assert cu.prepare_dataset(cu.resolve_settings("smoke")) == own_dataset


def test_dataset_classes_from_the_registry_and_from_a_folder(own_dataset):
    assert len(cu.dataset_classes("fruit30")) == 30  # 不用下载就知道类别
    assert cu.dataset_classes("demo") == sorted(cu.dataset_classes("demo"))
    assert cu.dataset_classes(str(own_dataset)) == sorted(OWN_CLASSES)


def test_a_hidden_folder_that_imagefolder_would_count_as_a_class_is_refused_until_removed(own_dataset):
    settings = cu.resolve_settings("smoke", dataset=str(own_dataset))
    (own_dataset / "train" / ".ipynb_checkpoints").mkdir()
    with pytest.raises(DatasetError, match=r"train/\.ipynb_checkpoints.*ImageFolder 会把隐藏目录当成类别"):
        cu.prepare_dataset(settings)
    (own_dataset / "train" / ".ipynb_checkpoints").rmdir()
    assert cu.prepare_dataset(settings) == own_dataset


def test_a_missing_folder_gets_a_chinese_message_that_names_it(tmp_path):
    missing = tmp_path / "没有这个目录"
    with pytest.raises(DatasetError, match="找不到数据集目录.*COURSE_DATASET"):
        cu.dataset_classes(str(missing))
    with pytest.raises(DatasetError, match="没有名为 'fruit31' 的数据集"):
        cu.dataset_classes("fruit31")


def test_train_evaluate_and_predict_notebooks_run_on_an_own_dataset(monkeypatch, own_dataset, tmp_path):
    monkeypatch.setenv("COURSE_DATASET", str(own_dataset))  # 内核继承环境变量
    monkeypatch.setenv("COURSE_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    printed = {}
    for name in ("01_transfer_learning", "04_train", "05_evaluate", "07_predict"):
        executed = tmp_path / f"{name}.ipynb"
        parameters = {"PROFILE": "smoke"} if name < "05" else {"PROFILE": "smoke", "STRATEGY": "freeze"}  # 不跑 06 的对比
        pm.execute_notebook(str(NOTEBOOKS_DIR / f"{name}.ipynb"), str(executed), parameters=parameters,
                            cwd=str(NOTEBOOKS_DIR), kernel_name="python3", progress_bar=False)
        nb = nbformat.read(executed, as_version=4)
        printed[name] = "\n".join(str(o.get("text", "")) + str(o.get("data", {}).get("text/plain", ""))
                                  for cell in nb.cells for o in cell.get("outputs", []))

    assert re.search(r"num_classes\s+3\s", printed["01_transfer_learning"])  # 分类头按这个数据集输出 3 类
    metrics = cu.checkpoints.read_metrics(cu.checkpoints.metrics_path("smoke", "freeze"))
    assert metrics["settings"]["dataset"] == str(own_dataset)
    model, meta = cu.load_checkpoint(cu.checkpoint_path("smoke", "freeze"), device="cpu")
    assert meta["class_names"] == sorted(OWN_CLASSES) and meta["num_classes"] == 3
    assert "测试图片数  12" in printed["05_evaluate"]  # val/ 的 3 × 4 张当测试集
    assert any(name in printed["07_predict"] for name in OWN_CLASSES)
