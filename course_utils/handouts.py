"""HTML 讲义：把执行过的笔记本（``outputs/<档位>/notebooks/``）转成可以离线打开、打印的网页。

- nbconvert 的 HTMLExporter（lab 模板）转换，图表以 base64 嵌在页面里（照片多的大图改存 JPEG）；
- 每页嵌入一份只含本页字符的 WOFF2 子集字体（fontTools 生成，一页通常只多几百 KB）：中文显示与电脑装了什么字体无关，
  单个文件就能拷走、发邮件、离线打开；含公式（``$…$``、``$$…$$``）的页面嵌入 MathJax 3（django-static-mathjax
  包带的 tex-svg-full.js，约 2.2 MB），没有网络也能显示公式；
- 进度条的中间帧（``\\r``）只留最后一帧，只含进度条的 stderr 按普通文字显示（不是出错的粉色底）；
  输出里本机的仓库路径写成相对路径，家目录写成 ``~``；
- ``index.html`` 按编号列出课程各节，再列出“附：训练记录”（06 用 papermill 执行 04 的副本）和参考答案；
  freeze / finetune 没有用上预训练权重时（smoke 档位除外），目录页和用到训练结果的页面顶部有一条醒目的提示；
- 学生版（``student=True``，写到 ``handouts/student/``）去掉打了 ``solution`` 标签的单元格和参考答案笔记本。

命令行：``python -m course_utils handouts [--profile P] [--student]``，或 ``make handouts``。
"""

from __future__ import annotations

import ast
import base64
import functools
import html
import importlib.resources
import io
import re
from dataclasses import dataclass
from pathlib import Path

from . import paths
from .config import resolve_profile
from .fonts import course_font_path
from .paths import NOTEBOOK_PATTERN, RECORD_METADATA_KEY

__all__: list[str] = []  # 命令行 python -m course_utils handouts 用

SOLUTION_TAG = "solution"  # 打了这个标签的单元格只出现在教师版讲义里
HANDOUT_FONT_FAMILY = "CourseSans"  # 讲义里 @font-face 的字体名
# 笔记本之间的链接：同目录（05_evaluate.ipynb）、参考答案（solutions/05_…）、参考答案回到正文（../05_…）
LINK_PATTERN = re.compile(r'<a href="(\.\./|solutions/)?(\d\d_[a-z0-9_]+)\.ipynb(#[^"]*)?">(.*?)</a>', re.S)
# 讲义里没有对应页面时，链接换成的说明（学生版不含参考答案）
UNLINKED_NOTES = {"solutions/": "这份讲义不含参考答案（学生版不带；做完练习后可以向老师要）"}
MATH_PATTERN = re.compile(r"\$\$|\$[^$\n]+\$|\\\(|\\\[")
FONT_PLACEHOLDER = "/*COURSE-HANDOUT-FONT*/"
MATHJAX_PLACEHOLDER = "<!--COURSE-HANDOUT-MATHJAX-->"
# MathJax 3 的单文件版（TeX 输入、SVG 输出、全部 TeX 扩展都在里面，字形是 SVG 路径，不另外加载字体或组件）
MATHJAX_PACKAGE, MATHJAX_FILE = "mathjax", "static/mathjax/es5/tex-svg-full.js"
# MathJax 3 的设置：与 nbconvert 原来给 MathJax 2 的设置相同的分隔符；公式里的中文用讲义嵌入的字体
MATHJAX_CONFIG = """<script>
window.MathJax = {
  tex: {inlineMath: [["$", "$"], ["\\\\(", "\\\\)"]], displayMath: [["$$", "$$"], ["\\\\[", "\\\\]"]],
        processEscapes: true, processEnvironments: true, tags: "ams"},
  svg: {fontCache: "global", mtextInheritFont: true, unknownFamily: '"%s", serif'},
};
</script>
"""
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PHOTO_PNG_BYTES = 300_000  # base64 长度超过它的 PNG 才考虑换成 JPEG
# tqdm 文字进度条的一行：“描述: 100%|####| 4/4 [00:02<00:00, …]”
PROGRESS_LINE = re.compile(r"^(?P<desc>.*?):?\s*\d{1,3}%\|[^|]*\|\s*(?P<count>\S+/\S+)\s")
# 用到训练结果（训练、加载检查点、对比策略）的代码：这些页面在没用上预训练权重时要加提示
MODEL_CALLS = ("cu.fit(", "cu.load_checkpoint(", "cu.ensure_checkpoint(", "cu.run_strategies(",
               "cu.strategy_comparison(", "cu.predict_test_set(")
PAGE_KINDS = ("lesson", "optional", "record", "solution")  # 核心课程、选学、训练记录、参考答案（目录页按这个顺序分组）

# 没用上预训练权重时的提示框（目录页和正文页共用；打印时也保留）
BANNER_CSS = """
div.course-banner { margin: 0 1em 1em; padding: 0.7em 1em; background: #fff4ce; border-left: 5px solid #d49b00;
  color: #3d2f00; line-height: 1.6; font-family: var(--jp-content-font-family, sans-serif); }
"""

# 讲义模板：在 nbconvert 的 lab 模板上去掉用不到的外部脚本，加上课程字体和页面导航
TEMPLATE = r"""{%- extends 'lab/index.html.j2' -%}
{%- block html_head_js_requirejs -%}
{%- if "widgets" in nb.metadata -%}<script src="{{ resources.require_js_url }}"></script>{%- endif -%}
{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}
{%- if resources.course_has_math -%}""" + MATHJAX_PLACEHOLDER + r"""{%- endif -%}
{%- endblock html_head_js_mathjax -%}
{%- block html_head_css -%}
<style type="text/css">""" + FONT_PLACEHOLDER + r"""</style>
<style type="text/css">
nav.course-nav { display: flex; gap: 1.5em; padding: 0.6em 1em; margin-bottom: 1em;
  border-bottom: 1px solid #ddd; font-family: var(--jp-ui-font-family); font-size: 14px; }
nav.course-nav a { text-decoration: none; }
@media print { nav.course-nav { display: none; } }
""" + "{% raw %}" + BANNER_CSS + "{% endraw %}" + r"""
</style>
{%- endblock html_head_css -%}
{%- block body_header -%}
{{ super() }}
{{ resources.course_nav }}
{{ resources.course_banner }}
{%- endblock body_header -%}
{%- block data_png scoped -%}{{ super() | replace("<img ", '<img alt="代码单元格输出的图" ') }}{%- endblock data_png -%}
{%- block data_jpg scoped -%}{{ super() | replace("<img ", '<img alt="代码单元格输出的图" ') }}{%- endblock data_jpg -%}
{%- block data_svg scoped -%}{{ super() | replace("<img ", '<img alt="代码单元格输出的图" ') }}{%- endblock data_svg -%}
"""


@dataclass
class Page:
    """讲义里的一页：源笔记本、输出文件名、标题、一句话说明、种类（PAGE_KINDS 之一）、是否用到训练结果。"""

    source: Path
    file_name: str
    title: str
    purpose: str
    kind: str = "lesson"
    uses_models: bool = False


# ---------------------------------------------------------------- 找笔记本、取标题
def _injected_parameters(nb) -> dict:
    """papermill 注入的参数（不含 PROFILE）；用来区分同一个笔记本的几次运行，如 04 的三种策略。"""
    cells = [c for c in nb.cells if c.cell_type == "code" and "injected-parameters" in c.metadata.get("tags", [])]
    values = {node.targets[0].id: ast.literal_eval(node.value) for c in cells for node in ast.parse(c.source).body
              if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)}
    values.pop("PROFILE", None)
    return values


def _describe(path: Path, nb, lesson_stems: set[str]) -> Page:
    """从第一个 Markdown 单元格取标题（“# NN 标题”）和一句话说明（“> …”），再认出页面的种类（PAGE_KINDS）。"""
    first = next((c.source for c in nb.cells if c.cell_type == "markdown"), "")
    heading = next((line for line in first.splitlines() if line.startswith("# ")), f"# {path.stem}")
    purpose = next((line[1:].strip() for line in first.splitlines() if line.startswith(">")), "")
    title = heading[2:].strip()
    params = _injected_parameters(nb)
    if params:
        title += "（" + "，".join(f"{k} = {v}" for k, v in params.items()) + "）"
    # 训练记录是 06 用 papermill 执行 04 得到的副本（04_train_<策略>.ipynb），有 RECORD_METADATA_KEY 标记；
    # 没有标记的旧副本按文件名认（某一节的文件名加 “_后缀”）
    if path.parent.name == "solutions":
        kind = "solution"
    elif RECORD_METADATA_KEY in nb.metadata or any(path.stem.startswith(f"{stem}_") for stem in lesson_stems):
        kind, purpose = "record", "用 papermill 执行的一次训练，保留了全部输出（06 的对比表和曲线来自这样的训练）。"
    else:
        kind = "optional" if int(path.name[:2]) >= 10 else "lesson"  # 编号 10 起是选学
    file_name = ("solutions-" if kind == "solution" else "") + path.stem + ".html"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    return Page(path, file_name, title, purpose, kind, any(call in code for call in MODEL_CALLS))


def _pages(notebooks: list[Path]) -> list[Page]:
    """每个执行过的笔记本一页，按 课程各节 -> 训练记录 -> 参考答案 排好（组内按文件名）。"""
    import nbformat

    lesson_stems = {p.stem for p in paths.NOTEBOOKS_DIR.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name)}
    lesson_stems |= {p.stem for p in notebooks if p.parent.name != "solutions"}
    pages = [_describe(path, nbformat.read(path, as_version=4), lesson_stems - {path.stem}) for path in notebooks]
    return sorted(pages, key=lambda page: (PAGE_KINDS.index(page.kind), page.file_name))


# ---------------------------------------------------------------- 转换
def _exporter(student: bool):
    """配置好的 HTMLExporter：lab 模板 + 课程模板、中文、合并进度条输出、学生版去掉参考答案。"""
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import CoalesceStreamsPreprocessor, TagRemovePreprocessor

    exporter = HTMLExporter(
        template_name="lab", template_file="course_handout.html.j2",
        extra_loaders=[DictLoader({"course_handout.html.j2": TEMPLATE})],
        embed_images=True, language_code="zh", exclude_anchor_links=True,
    )
    remove = TagRemovePreprocessor(remove_cell_tags={SOLUTION_TAG} if student else set(), enabled=True)
    for step in (remove, CoalesceStreamsPreprocessor(enabled=True), _tidy_progress_bars, _hide_machine_paths,
                 _drop_widget_placeholders, _shrink_photos):
        exporter.register_preprocessor(step, enabled=True)
    return exporter


def _tidy_progress_bars(nb, resources):
    """进度条的收尾：同一个进度条紧挨着的几帧只留最后一帧（tqdm 结束时会把最后一帧再打印一次）；
    只含进度条的 stderr 输出改成普通文字输出，讲义里不再是表示出错的粉色底。"""
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") != "stream" or output.get("name") != "stderr":
                continue
            lines = []
            for line in output.text.split("\n"):
                match, previous = PROGRESS_LINE.match(line), PROGRESS_LINE.match(lines[-1]) if lines else None
                if match and previous and match.group("desc", "count") == previous.group("desc", "count"):
                    lines.pop()  # 同一个进度条的同一个进度：留后一帧
                lines.append(line)
            output.text = "\n".join(lines)
            if all(PROGRESS_LINE.match(line) for line in lines if line.strip()):
                output.name = "stdout"
    return nb, resources


def _hide_machine_paths(nb, resources):
    """输出里本机的绝对路径：仓库里面的写成相对仓库根目录的路径，家目录写成 ~（讲义会发给别人）。"""
    repo, home = f"{paths.REPO_ROOT.as_posix()}/", Path.home().as_posix()

    def clean(text: str) -> str:
        text = text.replace(repo, "")
        return text.replace(home + "/", "~/") if len(home) > 1 else text

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if "text" in output:
                output.text = clean(output.text)
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/") and isinstance(value, str):
                    output.data[mime] = clean(value)
    return nb, resources


def _drop_widget_placeholders(nb, resources):
    """没有保存小部件状态时，网页进度条之类的输出只剩一行 “HBox(...)” 文字：去掉它们。"""
    if "widgets" not in nb.metadata:
        for cell in nb.cells:
            if cell.cell_type == "code":
                cell.outputs = [o for o in cell.outputs if WIDGET_MIME not in o.get("data", {})]
    return nb, resources


def _shrink_photos(nb, resources):
    """照片多的大图（如分错的图片网格）PNG 动辄上 MB：换成 JPEG（质量 85）能小一半以上时就换（图表 PNG 本来就小）。"""
    from PIL import Image

    for cell in nb.cells:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if len(data.get("image/png", "")) < PHOTO_PNG_BYTES:
                continue
            with Image.open(io.BytesIO(base64.b64decode(data["image/png"]))) as image:
                rgb = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
            buffer = io.BytesIO()
            rgb.convert("RGB").save(buffer, format="JPEG", quality=85, optimize=True)
            jpeg = base64.b64encode(buffer.getvalue()).decode("ascii")
            if len(jpeg) < len(data["image/png"]) / 2:
                del data["image/png"]
                data["image/jpeg"] = jpeg
    return nb, resources


def _navigation(pages: list[Page], index: int) -> str:
    """每页顶部的导航：目录、上一页、下一页。"""
    links = ['<a href="index.html">目录</a>']
    if index > 0:
        links.append(f'<a href="{pages[index - 1].file_name}">← {html.escape(pages[index - 1].title)}</a>')
    if index + 1 < len(pages):
        links.append(f'<a href="{pages[index + 1].file_name}">{html.escape(pages[index + 1].title)} →</a>')
    return '<nav class="course-nav">' + "".join(links) + "</nav>"


def _render_page(exporter, pages: list[Page], index: int, banner: str) -> str:
    """把一个执行过的笔记本转成 HTML 字符串（字体稍后再嵌入）；banner 只加在用到训练结果的页面上。"""
    import nbformat

    page = pages[index]
    nb = nbformat.read(page.source, as_version=4)
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    resources = {
        "metadata": {"name": page.title, "path": str(paths.NOTEBOOKS_DIR)},  # Markdown 里的相对图片路径
        "course_has_math": bool(MATH_PATTERN.search(markdown)),
        "course_nav": _navigation(pages, index),
        "course_banner": banner if page.uses_models else "",
    }
    return exporter.from_notebook_node(nb, resources=resources)[0]


def _link_pages(text: str, documents: dict[str, str]) -> str:
    """笔记本之间的链接指向讲义里对应的页面（``04_train.ipynb``、``solutions/05_…ipynb``、参考答案里的
    ``../05_…ipynb`` -> ``04_train.html``、``solutions-05_….html``、``05_….html``）；讲义里没有的页面换成一句说明。"""
    def replace(match):
        prefix, stem, anchor, label = match.groups()
        page = ("solutions-" if prefix == "solutions/" else "") + f"{stem}.html"
        if page in documents:
            return f'<a href="{page}{anchor or ""}">{label}</a>'
        return f'<span class="course-unlinked">{UNLINKED_NOTES.get(prefix, label)}</span>'

    return LINK_PATTERN.sub(replace, text)


SECTION_HEADINGS = {
    "lesson": ("课程", ""),
    "optional": ("选学", "核心课程之外的专题：学完 00–07 之后，按兴趣挑着学。"),
    "record": ("附：训练记录", "用 papermill 执行 04 留下的完整记录：06 对比三种策略时每种策略训练一次；"
                              "05、07 找不到检查点时也会补训练一次。"),
    "solution": ("练习参考答案", "只在教师版里。"),
}


def _render_index(pages: list[Page], profile: str, student: bool, banner: str) -> str:
    """目录页：按 课程各节 -> 选学 -> 训练记录 -> 参考答案 分组，列出每一页的标题和一句话说明。"""
    edition = "学生版（不含参考答案）" if student else "教师版（含参考答案）"
    sections = []
    for kind in PAGE_KINDS:
        group = [p for p in pages if p.kind == kind]
        if not group:
            continue
        heading, intro = SECTION_HEADINGS[kind]
        items = "\n".join(f'<li><a href="{p.file_name}">{html.escape(p.title)}</a>'
                          + (f'<p>{html.escape(p.purpose)}</p>' if p.purpose and kind != "record" else "") + "</li>"
                          for p in group)
        tag = "ol" if kind == "lesson" else "ul"
        sections.append(f"<h2>{heading}</h2>\n" + (f'<p class="intro">{intro}</p>\n' if intro else "")
                        + f"<{tag}>\n{items}\n</{tag}>")
    body = "\n".join(sections)
    return f"""<!DOCTYPE html>
<html lang="zh">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<title>迁移学习图像分类实战 · 讲义</title>
<style type="text/css">{FONT_PLACEHOLDER}</style>
<style type="text/css">
body {{ font-family: "{HANDOUT_FONT_FAMILY}", sans-serif; max-width: 46em; margin: 2em auto; padding: 0 1em;
  line-height: 1.6; color: #222; }}
h2 {{ margin-top: 1.6em; font-size: 1.25em; }}
li {{ margin: 0.8em 0; font-size: 1.1em; }}
li p, p.intro {{ margin: 0.2em 0 0; font-size: 0.9em; color: #555; }}
{BANNER_CSS.replace("margin: 0 1em 1em", "margin: 1em 0")}
</style>
</head>
<body>
<h1>迁移学习图像分类实战 · 讲义</h1>
<p>运行档位：{html.escape(profile)} ｜ {edition}</p>
{banner}
{body}
</body>
</html>
"""


def _weights_banner(profile: str, metrics_dir: Path) -> str:
    """这次运行需要预训练权重的策略却是随机初始化时的提示框（HTML）；都用上了权重，或者是 smoke 档位时为空。"""
    from .checkpoints import random_start, read_metrics

    if profile == "smoke":  # smoke 档位本来就不用预训练权重，只检查流程
        return ""
    found = map(read_metrics, sorted(Path(metrics_dir).glob("*.json")))  # 除了训练指标，还有类别映射等别的 JSON
    runs = {m["strategy"]: m for m in found if isinstance(m, dict) and "weights" in m and "strategy" in m}
    strategies, details = random_start(runs)
    if not strategies:
        return ""
    return (
        '<div class="course-banner" role="note"><strong>注意：本次运行没有用上 ImageNet 预训练权重。</strong>'
        f"{html.escape('、'.join(strategies))} 是从随机初始化开始训练的（原因见 04 构建模型时的说明）"
        + (f"：{html.escape(details)}" if details else "")
        + "。所以这些页面里的准确率和三种策略的对比不能说明迁移学习的效果。"
        f"联网或准备好权重文件后重新运行课程（python -m course_utils run --profile {html.escape(profile)}）。</div>"
    )


# ---------------------------------------------------------------- 字体
def _font_subset(font_source, text: str, flavor: str | None) -> bytes:
    """只保留 text 里用到的字符的字体子集；flavor="woff2" 时输出压缩的网页字体。"""
    from fontTools import subset

    options = subset.Options(flavor=flavor, layout_features=["*"], name_IDs=["*"], notdef_outline=True)
    font = subset.load_font(font_source, options, dontLoadGlyphNames=True)
    subsetter = subset.Subsetter(options)
    subsetter.populate(text=text)
    subsetter.subset(font)
    buffer = io.BytesIO()
    subset.save_font(font, buffer, options)
    return buffer.getvalue()


def _page_characters(page_html: str) -> str:
    """页面可能显示的字符：全部可打印 ASCII，加上页面里出现的每个非 ASCII 字符。"""
    return "".join(map(chr, range(0x20, 0x7F))) + "".join(sorted({ch for ch in page_html if ord(ch) > 0x7E}))


def _font_css(woff2: bytes) -> str:
    """嵌入字体的 @font-face，并让 JupyterLab 样式的正文、界面和代码（中文部分）都用它。"""
    family, data = f'"{HANDOUT_FONT_FAMILY}"', base64.b64encode(woff2).decode("ascii")
    return (f"@font-face {{ font-family: {family}; font-display: block;"
            f" src: url(data:font/woff2;base64,{data}) format(\"woff2\"); }}\n"
            f"html:root {{ --jp-content-font-family: {family}, sans-serif; --jp-ui-font-family: {family}, sans-serif;"
            f" --jp-code-font-family: \"DejaVu Sans Mono\", Menlo, Consolas, {family}, monospace; }}\n")


def _embed_fonts(documents: dict[str, str], font_path: Path) -> dict[str, str]:
    """给每个页面嵌入只含本页字符的字体：先从大字体里取出全部页面的字符（只读一次大文件），再逐页细分。"""
    every = "".join(sorted({ch for text in documents.values() for ch in _page_characters(text)}))
    base = _font_subset(str(font_path), every, flavor=None)
    embedded = {}
    for name, text in documents.items():
        woff2 = _font_subset(io.BytesIO(base), _page_characters(text), flavor="woff2")
        embedded[name] = text.replace(FONT_PLACEHOLDER, _font_css(woff2), 1)
    return embedded


# ---------------------------------------------------------------- 公式
@functools.lru_cache(maxsize=1)
def _mathjax_html() -> str:
    """嵌进含公式页面的 MathJax：设置加上整个 tex-svg-full.js（内联，页面单独拷走也能离线显示公式）。"""
    try:
        script = (importlib.resources.files(MATHJAX_PACKAGE) / MATHJAX_FILE).read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise FileNotFoundError(f"讲义里有公式，离线显示公式要用 django-static-mathjax 包带的 MathJax（{MATHJAX_FILE}），"
                                "但没有找到它。运行 make venv，或 pip install -r requirements.txt，装上之后再生成讲义。") from exc
    script = script.replace("</script", "<\\/script")  # 内联时不能提前结束 <script>（在字符串和正则里含义不变）
    return MATHJAX_CONFIG % HANDOUT_FONT_FAMILY + f"<script>{script}</script>"


# ---------------------------------------------------------------- 入口
def build_handouts(profile: str | None = None, student: bool = False, source_dir=None, out_dir=None,
                   font_path=None, metrics_dir=None) -> Path:
    """把执行过的笔记本生成 HTML 讲义，返回目录页 index.html 的路径。

    参数：
        profile：档位；None 表示读取环境变量 COURSE_PROFILE（默认 full）。student：True 生成学生版。
        source_dir：执行过的笔记本所在目录，默认 ``outputs/<档位>/notebooks/``。
        out_dir：讲义输出目录，默认 ``outputs/<档位>/handouts/``（学生版再加 ``student/``）。
        font_path：嵌入的中文字体，默认课程自带的字体；metrics_dir：训练指标 JSON 所在目录（判断有没有用上
            预训练权重），默认与 source_dir 同级的 ``metrics/``。
    """
    profile = resolve_profile(profile)
    source_dir = Path(source_dir or paths.output_dir(profile, "notebooks"))
    notebooks = sorted(p for p in source_dir.glob("*.ipynb") if NOTEBOOK_PATTERN.match(p.name))
    notebooks += [] if student else sorted((source_dir / "solutions").glob("*.ipynb"))  # 参考答案只进教师版
    if not notebooks:
        raise FileNotFoundError(f"{source_dir} 里还没有执行过的笔记本。先运行 python -m course_utils run --profile "
                                f"{profile}（或 make run PROFILE={profile}），再生成讲义。")
    out_dir = Path(out_dir) if out_dir else paths.output_dir(profile, "handouts") / ("student" if student else "")
    out_dir.mkdir(parents=True, exist_ok=True)
    pages = _pages(notebooks)
    banner = _weights_banner(profile, Path(metrics_dir) if metrics_dir else source_dir.parent / "metrics")
    exporter = _exporter(student)
    documents = {page.file_name: _render_page(exporter, pages, i, banner) for i, page in enumerate(pages)}
    documents["index.html"] = _render_index(pages, profile, student, banner)
    documents = {name: _link_pages(text, documents) for name, text in documents.items()}
    for name, text in _embed_fonts(documents, Path(font_path or course_font_path())).items():
        if MATHJAX_PLACEHOLDER in text:  # 字体嵌好之后再放 MathJax：它的 2 MB 脚本不参与挑选字体里的字
            text = text.replace(MATHJAX_PLACEHOLDER, _mathjax_html(), 1)
        (out_dir / name).write_text(text, encoding="utf-8")
    return out_dir / "index.html"


def main(args) -> int:
    """``python -m course_utils handouts`` 的入口；返回进程退出码。"""
    try:
        index = build_handouts(args.profile, student=args.student)
    except FileNotFoundError as exc:
        print(f"[失败] {exc}")
        return 1
    print(f"讲义已生成：{index}")
    return 0
