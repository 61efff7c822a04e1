"""先写出来，再复用：笔记本里教的函数和 course_utils 里的那一份必须一字不差。

03、04、07 把预处理、ImageFolder、DataLoader、换分类头、冻结、优化器、训练与评估循环、单张图片预测写在单元格里；
后面的笔记本通过 ``cu.`` 复用同一批函数。任何一边改了而另一边没改，这里的测试就失败，并指出是哪个函数、哪个笔记本。
"""

import ast
import importlib
import inspect
import json
import pkgutil
import textwrap
from pathlib import Path

import pytest

import course_utils

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"

# 每个笔记本第一次教、之后由 course_utils 复用的函数
TAUGHT = {
    "03_transforms.ipynb": {"build_transforms", "make_datasets", "make_loaders"},
    "04_train.ipynb": {"head_name", "replace_head", "freeze_backbone", "set_train_mode", "make_optimizer",
                       "train_one_epoch", "evaluate"},
    "07_predict.ipynb": {"predict_image"},
}

# issue 里要求的“真 PyTorch 代码”：这些写法必须出现在对应笔记本的代码单元格里
IDIOMS = {
    "03_transforms.ipynb": [("Compose(",), ("ImageFolder(",), ("DataLoader(",)],
    "04_train.ipynb": [("nn.Linear(",), ("requires_grad",), (".backward()",), (".step()",), ("weights=",)],
    "05_evaluate.ipynb": [("inference_mode", "no_grad"), ("confusion_matrix(", "classification_report(")],
    "07_predict.ipynb": [("softmax",), (".topk(",)],
}


def _code_cells(path: Path) -> list[str]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code"]


def notebook_functions(path: Path) -> dict[str, str]:
    """笔记本代码单元格里顶层定义的函数：{名字: 源代码}。"""
    found = {}
    for source in _code_cells(path):
        try:
            tree = ast.parse(source)
        except SyntaxError:  # 含 IPython 魔法命令的单元格
            continue
        for node in tree.body:
            if isinstance(node, ast.FunctionDef):
                found[node.name] = ast.get_source_segment(source, node)
    return found


def package_functions() -> dict[str, object]:
    """course_utils 各模块里定义的函数（按名字）。"""
    found = {}
    for info in pkgutil.iter_modules(course_utils.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"course_utils.{info.name}")
        for name, value in vars(module).items():
            if inspect.isfunction(value) and value.__module__ == module.__name__:
                found[name] = value
    return found


def differences(notebook_source: str, function) -> str | None:
    """两份源代码不一致时，返回第一处不同的行（对照着写）；一致时返回 None。"""
    ours = textwrap.dedent(inspect.getsource(function)).rstrip().splitlines()
    theirs = textwrap.dedent(notebook_source).rstrip().splitlines()
    for number, (a, b) in enumerate(zip(theirs, ours), start=1):
        if a.rstrip() != b.rstrip():
            return f"第 {number} 行\n  笔记本：{a}\n  课程包：{b}"
    if len(ours) != len(theirs):
        return f"行数不同：笔记本 {len(theirs)} 行，课程包 {len(ours)} 行"
    return None


@pytest.mark.parametrize("notebook", sorted(TAUGHT))
def test_taught_functions_are_identical_in_the_notebook_and_the_package(notebook):
    defined = notebook_functions(NOTEBOOKS / notebook)
    package = package_functions()
    missing = TAUGHT[notebook] - set(defined)
    assert not missing, f"{notebook} 应该亲手写出这些函数，却没有找到：{sorted(missing)}"
    for name in sorted(TAUGHT[notebook]):
        diff = differences(defined[name], package[name])
        assert diff is None, (f"{notebook} 里的 {name} 和 {package[name].__module__}.{name} 不一样（{diff}）。"
                              "改了一边就要同样改另一边。")


def test_no_notebook_redefines_a_package_function_differently():
    """笔记本里任何与课程包同名的函数（包括参考答案和选学笔记本）都必须是同一份代码，免得两份悄悄分叉。"""
    package = package_functions()
    for path in sorted(NOTEBOOKS.rglob("*.ipynb")):
        for name, source in notebook_functions(path).items():
            if name in package:
                assert differences(source, package[name]) is None, f"{path.name} 里的 {name} 与课程包里的不一样"


def test_the_comparison_notices_a_one_character_change():
    source = inspect.getsource(course_utils.models.replace_head)
    assert differences(source, course_utils.models.replace_head) is None
    changed = source.replace("num_classes)", "num_classes + 1)", 1)
    assert changed != source
    assert "第" in differences(changed, course_utils.models.replace_head)


@pytest.mark.parametrize("notebook", sorted(IDIOMS))
def test_core_notebooks_write_the_pytorch_idioms_themselves(notebook):
    code = "\n".join(_code_cells(NOTEBOOKS / notebook))
    for alternatives in IDIOMS[notebook]:
        assert any(text in code for text in alternatives), f"{notebook} 的代码单元格里没有 {' 或 '.join(alternatives)}"


def test_no_notebook_wraps_a_loader_in_tqdm_auto():
    """tqdm.auto 创建进度条时就 iter() 一次 DataLoader（tqdm 的 issue #1598）：多一个迭代器、多读几批、
    打乱的顺序和课程包（无人值守时用普通 tqdm）不同。笔记本用 tqdm.notebook，课程包用 tqdm.autonotebook。"""
    offenders = [path.name for path in sorted(NOTEBOOKS.rglob("*.ipynb"))
                 if any("tqdm.auto import" in source for source in _code_cells(path))]
    assert offenders == []
