"""笔记本与仓库约定的检查：标题、必需小节、唯一的 parameters 单元格、无输出、内核名、README 目录表。"""

import ast
import re
from pathlib import Path

import nbformat
import pytest

from course_utils.paths import NOTEBOOKS_DIR, REPO_ROOT

CORE = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
ALL = CORE + sorted((NOTEBOOKS_DIR / "solutions").glob("*.ipynb"))
REQUIRED_SECTIONS = ["## 学习目标", "## 先修", "## 练习", "## 小结"]


def _read(path):
    return nbformat.read(path, as_version=4)


def _markdown(nb):
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def test_there_are_notebooks():
    assert [p.name for p in CORE][:1] == ["00_setup.ipynb"]


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_core_notebook_file_name_title_and_sections(path):
    assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", path.name), "文件名应为 NN_小写英文.ipynb"
    nb = _read(path)
    first = nb.cells[0]
    number = path.name[:2]
    assert first.cell_type == "markdown"
    assert re.match(rf"# {number} \S", first.source), f"第一个单元格应以 “# {number} 中文标题” 开头"
    assert re.search(r"^> \S", first.source, re.M), "标题下面要有一行 “> 一句话说明目的”"
    text = _markdown(nb)
    for section in REQUIRED_SECTIONS:
        assert section in text, f"缺少小节 {section}"
    assert "**上一节**" in text and "**下一节**" in text


@pytest.mark.parametrize("path", CORE, ids=lambda p: p.name)
def test_links_between_notebooks_point_to_existing_files(path):
    for target in re.findall(r"\]\(([^)#]+\.ipynb)", _markdown(_read(path))):
        assert (path.parent / target).exists(), f"{path.name} 链接到不存在的 {target}"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_one_parameters_cell_of_plain_literals_with_profile(path):
    nb = _read(path)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "需要恰好一个打了 parameters 标签的单元格"
    tree = ast.parse(tagged[0].source)
    names = []
    for node in tree.body:
        assert isinstance(node, ast.Assign), "parameters 单元格只能有赋值语句"
        ast.literal_eval(node.value)  # 只能是字面量，papermill 才能识别和覆盖
        names += [t.id for t in node.targets]
    assert "PROFILE" in names
    assert all(n.isupper() for n in names), "参数名用大写"


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_committed_clean_with_python3_kernel(path):
    nb = _read(path)
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "提交前清除输出"
        else:
            assert "data:image" not in cell.source, "不要在 Markdown 里嵌入 base64 图片"
        assert "pretrained=" not in cell.source, "用 weights= 代替已弃用的 pretrained="
        assert "sys.path" not in cell.source, "不要改 sys.path：course_utils 用 pip install -e . 安装"


def test_readme_course_table_lists_every_core_notebook_with_its_title():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    table = readme.split("<!-- course-table:start -->")[1].split("<!-- course-table:end -->")[0]
    rows = re.findall(r"^\|\s*\[(\d\d) ([^\]]+)\]\(notebooks/([^)]+)\)", table, re.M)
    listed = {file: f"{num} {title}" for num, title, file in rows}
    expected = {}
    for path in CORE:
        title = _read(path).cells[0].source.splitlines()[0].lstrip("# ").strip()
        expected[path.name] = title
    assert listed == expected, "README 的课程目录表与 notebooks/ 不一致"
