"""papermill 从仓库根目录（而不是 notebooks/）执行笔记本，并注入参数。"""

import os
import subprocess
import sys

import nbformat

from course_utils.paths import NOTEBOOKS_DIR, REPO_ROOT


def test_setup_notebook_runs_from_repo_root_with_injected_profile(tmp_path):
    out = tmp_path / "00.ipynb"
    env = {**os.environ, "COURSE_OUTPUT_DIR": str(tmp_path / "outputs")}
    cmd = [sys.executable, "-m", "papermill", str(NOTEBOOKS_DIR / "00_setup.ipynb"), str(out),
           "-p", "PROFILE", "smoke", "--no-progress-bar"]
    result = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert injected and 'PROFILE = "smoke"' in injected[0].source
    shown = "".join(str(o.get("data", {}).get("text/html", "")) for c in nb.cells for o in c.get("outputs", []))
    assert "smoke" in shown  # 设置表显示的是注入的档位
    assert (tmp_path / "outputs" / "smoke" / "figures").is_dir()
