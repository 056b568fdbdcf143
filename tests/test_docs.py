"""The documentation: the README's shape, the strict MkDocs build (a broken link, anchor or reference fails it), the
settings reference generated from the code, and the built pages in a real headless browser (Chromium)."""

import dataclasses
import html
import importlib.util
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import CHROMIUM, chromium

ROOT = Path(__file__).resolve().parents[1]
DOCS_TOOLS = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
MISSING = [name for name in DOCS_TOOLS if importlib.util.find_spec(name.split(".")[0]) is None
           or importlib.util.find_spec(name) is None]
ROW = re.compile(r'<tr class="doc-section-item">(.*?)</tr>', re.S)


def nav_pages() -> list[str]:
    """Every page of mkdocs.yml's navigation, in order."""
    config = yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)  # leaves the !!python tags as text
    pages = []

    def walk(items):
        for item in items:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            walk(value) if isinstance(value, list) else pages.append(value)

    walk(config["nav"])
    return pages


def own_fields(cls) -> list[dataclasses.Field]:
    """The fields declared in `cls`'s own body: those it adds to its dataclass bases and those it redefines."""
    declared = vars(cls).get("__annotations__", {})
    return [f for f in dataclasses.fields(cls) if f.name in declared]


def table_rows(page: str) -> dict[str, tuple[str, str]]:
    """name -> (description, default) of every row of the generated parameter tables of a built page."""
    rows = {}
    for row in ROW.findall(page):
        cells = re.findall(r"<td>(.*?)</td>", row, re.S)
        if len(cells) < 4:  # a table of return values or exceptions: type and description only
            continue
        name = html.unescape(re.sub(r"<[^>]+>", "", cells[0]).strip())
        description = " ".join(html.unescape(re.sub(r"<[^>]+>", "", cells[2])).split())
        default = html.unescape(re.sub(r"<[^>]+>", "", cells[3]).strip())
        rows[name] = (description, default)
    return rows


def primary_nav(page: str) -> str:
    """The site navigation of a page: its primary <nav> element, the section <nav>s inside it included."""
    start = page.index('<nav class="md-nav md-nav--primary"')
    depth = 0
    for tag in re.finditer(r"<(/?)nav\b", page[start:]):
        depth += -1 if tag.group(1) else 1
        if depth == 0:
            return page[start:start + tag.end()]
    raise AssertionError("the primary navigation is not closed")


# ------------------------------------------------------------------------------------------------ README


def test_readme_is_short_and_opens_with_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).splitlines()
    assert [line.split("#")[0].strip() for line in first_block] == ["make demo", "make test"]
    assert readme.index("```bash") < readme.index("**melrl**")  # the commands come before anything else
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):  # every page the README points at exists
        assert (ROOT / link).is_file(), link


def test_readme_and_docs_describe_the_product_not_the_machines_it_was_built_on():
    texts = {path: path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    for path, text in texts.items():
        for pattern in (r"\.\./shared", r"shared/data", r"/w[o]rk/", r"64 MiB", r"\blent\b", r"no GPU lent"):
            assert not re.search(pattern, text, re.I), f"{path.name}: {pattern}"


def test_every_docs_page_is_in_the_navigation():
    pages = nav_pages()
    assert len(pages) == len(set(pages))
    assert sorted(pages) == sorted(p.name for p in (ROOT / "docs").glob("*.md"))


# ------------------------------------------------------------------------------------------------ the build


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    if MISSING:
        pytest.skip(f"the docs extra is not installed ({', '.join(MISSING)} missing): pip install -e '.[docs]' "
                    "(Python 3.11+)")
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    assert "WARNING" not in result.stderr, result.stderr[-4000:]
    return out


def test_strict_build_writes_every_page(site):
    for page in nav_pages():
        built = site / page.replace(".md", ".html")
        assert built.is_file(), page
        assert 'class="md-nav md-nav--primary"' in built.read_text(), page
    method = (site / "method.html").read_text()
    assert '<pre class="mermaid"><code>flowchart LR' in method  # the training step's diagram
    presets = (site / "presets.html").read_text()
    assert "max_pairs_per_prompt" in presets and "# not stated" in presets  # the preset file shown as it is


def test_settings_reference_is_generated_from_the_code(site):
    from melrl.cli.train import RunArguments
    from melrl.training.config import MELConfig

    rows = table_rows((site / "settings.html").read_text())
    for cls in (MELConfig, RunArguments):
        fields = own_fields(cls)
        assert fields
        for field in fields:
            assert field.name in rows, f"{cls.__name__}.{field.name} is missing from the settings reference"
            description, default = rows[field.name]
            assert description, field.name
            assert default == repr(field.default), (field.name, default)
    # MELConfig's descriptions come from its docstring, RunArguments' from each field's help
    assert rows["replay_threshold"][0].startswith("fraction of the replay answers that must verify")
    for field in own_fields(RunArguments):
        assert rows[field.name][0] == field.metadata["help"]


def test_api_reference_documents_the_public_functions(site):
    page = (site / "api.html").read_text()
    for path in ("melrl.training.trainer.MELTrainer", "melrl.method.algorithms.compute_advantages",
                 "melrl.verify.verifier.verify_batch", "melrl.data.loaders.load_records",
                 "melrl.evaluation.runner.evaluate"):
        assert f'id="{path}"' in page, path
    rows = table_rows(page)
    assert rows["group_size"][0] == "rollouts per prompt (G)."  # compute_advantages' parameter table


# ------------------------------------------------------------------------------------------------ browser


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium (Debian: apt-get install -y chromium)")
def test_pages_in_headless_chromium(site, tmp_path):
    from melrl.training.config import MELConfig

    pages = nav_pages()
    for name in ("index.html", "settings.html"):
        dom = chromium((site / name).resolve().as_uri(), tmp_path / "profile", "--dump-dom").stdout
        nav = primary_nav(dom)
        for page in pages:  # the navigation links every page
            assert f'href="{page.replace(".md", ".html")}"' in nav, (name, page)
        assert "md-sidebar--primary" in dom and "md-header" in dom
    assert "Settings reference" in dom
    rows = table_rows(dom)  # the page as the browser built it
    assert {f.name for f in own_fields(MELConfig)} <= set(rows)
    assert re.search(r'<h2 id="melrl\.training\.config\.MELConfig"', dom)

    shot = tmp_path / "settings.png"
    chromium((site / "settings.html").resolve().as_uri(), tmp_path / "profile", f"--screenshot={shot}",
             "--window-size=1280,2000", "--hide-scrollbars")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", data[16:24]) == (1280, 2000) and len(data) > 50_000
