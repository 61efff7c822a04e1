"""HTML 讲义：目录的分组与顺序、嵌入的子集字体覆盖页面上的每个中文字符、进度条噪声、本机路径、
没用上预训练权重时的提示、学生版、命令行。"""

import base64
import html
import io
import os
import re
import json
import subprocess
import sys
from html.parser import HTMLParser

import nbformat
import pytest
from fontTools.ttLib import TTFont
from handout_samples import CACHE_PATH, FIGURE_PATH, SECRET, WARNING, write_executed_notebook

import course_utils as cu
from course_utils.handouts import HANDOUT_FONT_FAMILY, build_handouts


class _Text(HTMLParser):
    """页面上真正显示的文字（不含 <style>、<script>）。"""

    def __init__(self):
        super().__init__()
        self.parts, self._skip = [], 0

    def handle_starttag(self, tag, attrs):
        self._skip += tag in ("style", "script")

    def handle_endtag(self, tag):
        self._skip -= tag in ("style", "script")

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)


def visible_text(page: str) -> str:
    parser = _Text()
    parser.feed(page)
    return "".join(parser.parts)


def embedded_font(page: str) -> TTFont:
    match = re.search(r"font-family: \"(\w+)\";[^}]*base64,([A-Za-z0-9+/=]+)\) format\(\"woff2\"\)", page)
    assert match, "页面里没有嵌入 WOFF2 字体"
    assert match.group(1) == HANDOUT_FONT_FAMILY
    return TTFont(io.BytesIO(base64.b64decode(match.group(2))))


@pytest.fixture
def executed(tmp_path):
    """一个 outputs/<档位>/notebooks/ 的样子：两节课、06 执行 04 留下的两份训练记录（一份有标记，
    一份是没有标记的旧副本）和一份参考答案。"""
    source = tmp_path / "notebooks"
    write_executed_notebook(source / "05_evaluate.ipynb", uses_model=True)
    write_executed_notebook(source / "00_setup.ipynb", title="00 环境配置与中文字体", purpose="检查环境。")
    write_executed_notebook(source / "04_train_scratch.ipynb", title="04 三种迁移学习策略", purpose="训练。",
                            injected={"PROFILE": "smoke", "STRATEGY": "scratch"}, record="scratch")
    write_executed_notebook(source / "04_train_finetune.ipynb", title="04 三种迁移学习策略", purpose="训练。",
                            injected={"PROFILE": "smoke", "STRATEGY": "finetune"})  # 按文件名认出是记录
    write_executed_notebook(source / "solutions" / "05_evaluate_solutions.ipynb", title="05 练习参考答案：模型评估")
    write_executed_notebook(source / "10_gradcam.ipynb", title="10 模型在看哪里：Grad-CAM", purpose="看热力图。")
    (source / "Untitled.ipynb").write_text("不是课程笔记本", encoding="utf-8")  # 不符合命名的文件被忽略
    return source


def test_index_groups_lessons_training_records_and_solutions(executed, tmp_path):
    index = build_handouts("smoke", source_dir=executed, out_dir=tmp_path / "out")
    listing = index.read_text(encoding="utf-8")
    links = re.findall(r'<li><a href="([^"]+)">([^<]+)</a>', listing)
    assert links == [
        ("00_setup.html", "00 环境配置与中文字体"),
        ("05_evaluate.html", "05 模型评估"),
        ("10_gradcam.html", "10 模型在看哪里：Grad-CAM"),
        ("04_train_finetune.html", "04 三种迁移学习策略（STRATEGY = finetune）"),
        ("04_train_scratch.html", "04 三种迁移学习策略（STRATEGY = scratch）"),
        ("solutions-05_evaluate_solutions.html", "05 练习参考答案：模型评估"),
    ]
    headings = re.findall(r"<h2>([^<]+)</h2>", listing)
    assert headings == ["课程", "选学", "附：训练记录", "练习参考答案"]
    assert "<ol>" in listing.split("<h2>选学</h2>")[0] and "<ol>" not in listing.split("<h2>选学</h2>")[1]  # 只给核心课程编号
    records = listing.split("<h2>附：训练记录</h2>")[1].split("<h2>")[0]
    assert "训练。" not in records  # 训练记录不重复 04 的一句话说明
    for file_name, title in links:
        page = (index.parent / file_name).read_text(encoding="utf-8")
        assert f"<title>{title}</title>" in page
        assert '<html lang="zh">' in page
        assert 'href="index.html">目录</a>' in page  # 每页都能回到目录
    evaluate = (index.parent / "05_evaluate.html").read_text(encoding="utf-8")
    assert 'href="00_setup.html"' in evaluate  # 笔记本之间的链接指向讲义里的页面
    assert "06_compare.ipynb" not in evaluate  # 讲义里没有这一页：不留死链接，只留文字
    assert '<span class="course-unlinked">06 三种策略对比</span>' in evaluate
    assert 'href="solutions-05_evaluate_solutions.html"' in evaluate  # 参考答案链接指向讲义里的参考答案页
    solution = (index.parent / "solutions-05_evaluate_solutions.html").read_text(encoding="utf-8")
    assert 'href="05_evaluate.html"' in solution  # “返回”链接（../05_evaluate.ipynb）
    middle = (index.parent / "04_train_finetune.html").read_text(encoding="utf-8")
    assert 'href="10_gradcam.html"' in middle and 'href="04_train_scratch.html"' in middle  # 上一页、下一页（按目录页的顺序）


def test_each_page_embeds_a_small_font_that_covers_every_character_shown(executed, tmp_path):
    index = build_handouts("smoke", source_dir=executed, out_dir=tmp_path / "out")
    with TTFont(cu.fonts.course_font_path()) as full_font:
        full_glyphs = len(full_font.getGlyphOrder())
    for path in sorted(index.parent.glob("*.html")):
        page = path.read_text(encoding="utf-8")
        font = embedded_font(page)
        assert font.flavor == "woff2"
        covered = set(font.getBestCmap())
        shown = {ch for ch in visible_text(page) if not ch.isspace()}
        assert any(ord(ch) > 0x2E80 for ch in shown)  # 页面上确实有中文
        assert not {ch for ch in shown if ord(ch) not in covered}, f"{path.name} 有字符不在嵌入的字体里"
        assert len(font.getGlyphOrder()) < full_glyphs / 10  # 只是本页用到的子集
        assert path.stat().st_size < 1_000_000, "一页讲义应小于 1 MB"


def test_progress_bar_frames_and_widget_placeholders_do_not_reach_the_page(executed, tmp_path):
    index = build_handouts("smoke", source_dir=executed, out_dir=tmp_path / "out")
    page = (index.parent / "05_evaluate.html").read_text(encoding="utf-8")
    text = visible_text(page)
    assert text.count("4/4") == 1 and "1.99it/s" in text  # 只留最后一帧（结束时重复打印的那帧也合并掉）
    assert "测试集准确率：87.5%" in text  # 正常输出都在
    assert "2/4" not in text and "0/4" not in text  # 中间帧被合并掉
    assert "HBox" not in text
    stderr = re.findall(r'data-mime-type="application/vnd.jupyter.stderr"[^>]*>\s*<pre>(.*?)</pre>', page, re.S)
    assert [html.unescape(block).strip() for block in stderr] == [WARNING]  # 进度条不再是出错的粉色底，警告仍是


def test_outputs_show_repository_paths_not_this_machines_paths(executed, tmp_path):
    from course_utils.paths import REPO_ROOT

    index = build_handouts("smoke", source_dir=executed, out_dir=tmp_path / "out")
    text = visible_text((index.parent / "05_evaluate.html").read_text(encoding="utf-8"))
    assert f"PosixPath('{FIGURE_PATH}')" in text
    assert f"权重缓存：~/{CACHE_PATH}" in text
    assert str(REPO_ROOT) not in text


def test_student_edition_drops_solution_cells_and_solution_notebooks(executed, tmp_path):
    teacher = build_handouts("smoke", source_dir=executed, out_dir=tmp_path / "teacher")
    student = build_handouts("smoke", student=True, source_dir=executed, out_dir=tmp_path / "student")
    assert SECRET in (teacher.parent / "05_evaluate.html").read_text(encoding="utf-8")
    page = (student.parent / "05_evaluate.html").read_text(encoding="utf-8")
    assert SECRET not in page and "测试集准确率" in page
    assert "solutions-05_evaluate_solutions.html" not in page  # 学生版没有参考答案页，不链接过去
    assert 'href="solutions/' not in page and "这份讲义不含参考答案" in page  # 也不留指向 .ipynb 的死链接
    assert not list(student.parent.glob("solutions-*"))
    listing = student.read_text(encoding="utf-8")
    assert "参考答案</a>" not in listing and "学生版" in listing


def _write_metrics(folder, **weights_by_strategy):
    folder.mkdir(parents=True, exist_ok=True)
    for strategy, weights in weights_by_strategy.items():
        (folder / f"{strategy}.json").write_text(json.dumps({"strategy": strategy, "weights": weights}), "utf-8")


def test_random_weights_banner_on_the_index_and_on_pages_that_use_trained_models(executed, tmp_path):
    _write_metrics(tmp_path / "metrics", freeze=None, finetune=None, scratch=None)
    index = build_handouts("demo", source_dir=executed, out_dir=tmp_path / "out")
    banner = "本次运行没有用上 ImageNet 预训练权重"
    listing = visible_text(index.read_text(encoding="utf-8"))
    assert banner in listing and "finetune 等同于从头训练（只是主干网络的学习率更小）" in listing
    assert "freeze、finetune 是从随机初始化开始训练的" in listing  # scratch 本来就是随机初始化，不算
    pages = {p.name: visible_text(p.read_text(encoding="utf-8")) for p in index.parent.glob("*.html")}
    assert banner in pages["05_evaluate.html"]  # 加载了检查点
    assert banner not in pages["00_setup.html"]  # 与训练结果无关
    assert "python -m course_utils run --profile demo" in pages["05_evaluate.html"]

    _write_metrics(tmp_path / "metrics", freeze="IMAGENET1K_V1", finetune="IMAGENET1K_V1")
    again = build_handouts("demo", source_dir=executed, out_dir=tmp_path / "again")
    assert banner not in again.read_text(encoding="utf-8")  # 都用上了权重：没有提示
    _write_metrics(tmp_path / "metrics", freeze=None)
    smoke = build_handouts("smoke", source_dir=executed, out_dir=tmp_path / "smoke")
    assert banner not in smoke.read_text(encoding="utf-8")  # smoke 档位本来就不用预训练权重


def test_pages_load_nothing_from_the_network_and_only_math_pages_carry_mathjax(tmp_path):
    source = tmp_path / "notebooks"
    write_executed_notebook(source / "01_plain.ipynb")
    write_executed_notebook(source / "02_math.ipynb", math=True)
    index = build_handouts("smoke", source_dir=source, out_dir=tmp_path / "out")
    plain = (index.parent / "01_plain.html").read_text(encoding="utf-8")
    math = (index.parent / "02_math.html").read_text(encoding="utf-8")
    for page in (plain, math):
        assert not re.search(r'<(script|link|img)[^>]+(src|href)="(https?:)?//', page)  # 什么都不从网上加载
    assert re.search(r'<img alt="代码单元格输出的图"[^>]* src="data:image/png;base64,', plain)  # 图片嵌在页面里
    assert "window.MathJax" not in plain and len(plain) < 1_000_000  # 没有公式的页面不带 2 MB 的 MathJax
    assert "window.MathJax = {" in math and "MathJax.startup" in math  # MathJax 3 整个嵌在页面里
    assert r"$\mathrm{acc} = \frac{正确}{总数}$" in visible_text(math)  # 公式的 TeX 原样交给 MathJax
    cmap = embedded_font(math).getBestCmap()
    assert all(ord(ch) in cmap for ch in "正确总数")  # 公式里的中文也由嵌入的字体显示（MathJax 设置里指定了它）


def test_math_page_without_the_mathjax_package_is_a_chinese_error(tmp_path, monkeypatch):
    import course_utils.handouts as handouts

    source = tmp_path / "notebooks"
    write_executed_notebook(source / "02_math.ipynb", math=True)
    monkeypatch.setattr(handouts, "MATHJAX_FILE", "static/mathjax/es5/no-such-file.js")
    handouts._mathjax_html.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match="django-static-mathjax.*pip install -r requirements.txt"):
            build_handouts("smoke", source_dir=source, out_dir=tmp_path / "out")
    finally:
        handouts._mathjax_html.cache_clear()


def test_missing_executed_notebooks_is_a_chinese_error_with_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="先运行 python -m course_utils run --profile smoke"):
        build_handouts("smoke", source_dir=tmp_path / "empty", out_dir=tmp_path / "out")


def _cli(*args, outputs):
    env = {**os.environ, "COURSE_OUTPUT_DIR": str(outputs)}
    return subprocess.run([sys.executable, "-m", "course_utils", *args], capture_output=True, text=True, env=env)


def test_handouts_command_builds_both_editions_in_the_profile_folder(tmp_path):
    outputs = tmp_path / "outputs"
    result = _cli("handouts", "--profile", "smoke", outputs=outputs)
    assert result.returncode == 1 and "[失败]" in result.stdout and "make run PROFILE=smoke" in result.stdout
    write_executed_notebook(outputs / "smoke" / "notebooks" / "05_evaluate.ipynb")
    assert _cli("handouts", "--profile", "smoke", outputs=outputs).returncode == 0
    assert (outputs / "smoke" / "handouts" / "05_evaluate.html").exists()
    result = _cli("handouts", "--profile", "smoke", "--student", outputs=outputs)
    assert result.returncode == 0, result.stderr
    assert (outputs / "smoke" / "handouts" / "student" / "index.html").exists()


def _trivial_notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("PROFILE = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# 00 小测试\n\n> 只打印一行。"), params,
                nbformat.v4.new_code_cell("print('你好')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_run_builds_handouts_at_the_end_unless_told_not_to(tmp_path):
    books = tmp_path / "nbs"
    books.mkdir()
    _trivial_notebook(books / "00_hello.ipynb")
    with_handouts, without = tmp_path / "a", tmp_path / "b"
    result = _cli("run", "--profile", "smoke", "--notebooks-dir", str(books), outputs=with_handouts)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "讲义已生成" in result.stdout
    page = (with_handouts / "smoke" / "handouts" / "00_hello.html").read_text(encoding="utf-8")
    assert "你好" in visible_text(page)
    assert (with_handouts / "smoke" / "handouts" / "student" / "00_hello.html").exists()
    result = _cli("run", "--profile", "smoke", "--no-handouts", "--notebooks-dir", str(books), outputs=without)
    assert result.returncode == 0 and "讲义" not in result.stdout
    assert not list((without / "smoke").glob("handouts/*.html"))


def test_large_photo_grids_are_stored_as_jpeg_but_charts_stay_png(tmp_path):
    source = tmp_path / "notebooks"
    write_executed_notebook(source / "05_evaluate.ipynb", photo=True)
    png_bytes = len(nbformat.read(source / "05_evaluate.ipynb", as_version=4).cells[3].outputs[1].data["image/png"])
    index = build_handouts("smoke", source_dir=source, out_dir=tmp_path / "out")
    page = (index.parent / "05_evaluate.html").read_text(encoding="utf-8")
    jpeg = re.findall(r'src="data:image/jpeg;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(jpeg) == 1 and len(jpeg[0]) < png_bytes / 2
    assert len(re.findall(r'src="data:image/png;base64,', page)) == 1  # 小图表仍是 PNG
