"""The docs are tested: README.md and docs/*.md, the pages `make docs` builds.

* Every ```python block compiles, and every name it imports from rnnstream exists.
* Every block runs, page by page in one namespace (a page's blocks build on each other), in a
  temporary folder that holds the files and arrays the pages name (``model.onnx``,
  ``prices.csv``, ``history``, ``keys``, ...: :func:`_page_folder`, :data:`GIVEN`), unless an
  HTML comment ``<!-- not-run: why -->`` just before it says why it cannot (a Spark session,
  a server that runs until a signal). A block after ``<!-- runs-against: rnnstream serve
  ARGS -->`` runs against that server, started on free ports (the block's 127.0.0.1:8000 and
  :8001 are rewritten to them), in the page's folder.
* Every relative link (``[text](path#anchor)``, images too) points at a file that exists, and
  an anchor into a Markdown file at one of its headings.
* Every API name the prose puts in backticks exists: a dotted ``rnnstream.x.y`` path, a
  ``Predictor.method`` (and the other public classes the pages name), and the keywords of a
  ``StreamPool(threads=...)``-style call.
* Every ``make TARGET`` is a Makefile target, and every ``--flag`` after ``rnnstream COMMAND``
  appears in that command's ``--help``; on the command-line and serving pages every backticked
  ``--flag`` is some command's.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import importlib
import inspect
import re
import unicodedata
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *(ROOT / "docs").glob("*.md")])
NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.+?)\s*-->")
RUNS_AGAINST = re.compile(r"<!--\s*runs-against:\s*rnnstream serve (.+?)\s*-->")
FENCE = re.compile(r"^(\s*)```(\w*)\s*$")
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    not_run: str | None  # the reason given, or None: it runs
    server: str | None  # `rnnstream serve` arguments it runs against, or None

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _blocks(page: Path) -> list[Block]:
    """Fenced code blocks, with the not-run reason of the comment just before each."""
    lines = page.read_text(encoding="utf-8").split("\n")
    out: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        body = [line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:j]]
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        reason = NOT_RUN.search(lines[k]) if k >= 0 else None
        server = RUNS_AGAINST.search(lines[k]) if k >= 0 else None
        out.append(Block(page, i + 1, lang, "\n".join(body) + "\n",
                         reason.group(1) if reason else None,
                         server.group(1) if server else None))
        i = j + 1
    return out


def _prose(page: Path) -> str:
    """The page without its fenced blocks (links and headings live here)."""
    text = page.read_text(encoding="utf-8")
    return re.sub(r"^\s*```.*?^\s*```\s*$", "", text, flags=re.S | re.M)


def _takes(func: Callable[..., object], keyword: str) -> bool:
    """True when calling ``func`` (a function or class) accepts ``keyword=``."""
    params = inspect.signature(func).parameters
    return keyword in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


ALL_BLOCKS = [b for p in PAGES for b in _blocks(p)]
PYTHON = [b for b in ALL_BLOCKS if b.lang == "python"]


# --- Python blocks ------------------------------------------------------------------------------

@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.where)
def test_python_block_compiles_and_its_imports_exist(block: Block) -> None:
    """Run or not, a block compiles, imports only what exists, and calls what it imports from
    rnnstream with keywords those functions take."""
    tree = ast.parse(block.code, filename=block.where)
    imported: dict[str, Any] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnnstream"):
            module = importlib.import_module(node.module or "")
            missing = [a.name for a in node.names if not hasattr(module, a.name)]
            assert not missing, f"{block.where}: {node.module} has no {missing}"
            imported |= {a.asname or a.name: getattr(module, a.name) for a in node.names}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and callable(target := imported.get(node.func.id)):
            unknown = [k.arg for k in node.keywords if k.arg and not _takes(target, k.arg)]
            assert not unknown, f"{block.where}: {node.func.id}() takes no {unknown}"


def test_not_run_blocks_are_few_and_say_why() -> None:
    skipped = [b for b in PYTHON if b.not_run is not None]
    assert all(len(b.not_run or "") >= 10 for b in skipped), [b.where for b in skipped]
    assert len(skipped) <= len(PYTHON) // 2 + 1, (
        f"{len(skipped)} of {len(PYTHON)} Python blocks are not run: give them what they need "
        "in tests/docs/test_docs.py instead")


def _write_prices(path: Path, n: int = 160) -> None:
    t = np.arange(n)
    close = 100 + np.cumsum(np.sin(t / 5.0)) + 0.1 * t
    volume = 1000 + 50 * np.cos(t / 3.0)
    rows = ["date,close,volume"] + [f"2026-01-{i:04d},{c:.4f},{v:.2f}"
                                    for i, (c, v) in enumerate(zip(close, volume, strict=True))]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


# What the pages' blocks take as given: names a reader would have in hand (their data).
def _given() -> dict[str, object]:
    import torch
    from lesson_models import LessonRNN

    rng = np.random.default_rng(0)
    t = np.arange(120, dtype=np.float32)
    with torch.random.fork_rng():  # seeded weights; the caller's generator is untouched
        torch.manual_seed(0)
        rnn = LessonRNN(1, 1, 16, 1).eval()
    return {
        "rnn": rnn,                                            # export_module: your module
        "series": np.sin(t / 4)[:, None],                      # ... and its raw points
        "points": np.sin(t / 4)[:, None],
        "X": np.stack([np.sin(t / 4), np.cos(t / 4)], axis=1),  # from_arrays(X, Y)
        "Y": np.sin(t / 4)[:, None] + 0.01,
        "history": np.sin(t[:50] / 4)[:, None],               # Predictor.prime
        "xs": np.sin(t[:20] / 4)[:, None],                     # Predictor.run_sequence
        "point": 0.25,
        "keys": ["AAPL", "MSFT"],                              # StreamPool.step_many
        "values": np.array([[187.1], [411.0]], np.float32),
        "x": rng.standard_normal((3, 10, 1)).astype(np.float32),  # StreamPool.run_sequences
        "states": None,
    }


@pytest.fixture(scope="module")
def page_folder(tmp_path_factory: pytest.TempPathFactory, model_file) -> Path:
    """A folder with model.onnx (an untrained 1-feature LSTM, its own target) and prices.csv."""
    folder = tmp_path_factory.mktemp("docs-run")
    path, _ = model_file(cell="lstm", hidden=8, seed=3)
    for suffix in ("", ".json"):
        src = Path(str(path) + suffix)
        if src.exists():
            (folder / ("model.onnx" + suffix)).write_bytes(src.read_bytes())
    step = path.with_name(path.stem + ".step.onnx")
    if step.exists():
        (folder / "model.step.onnx").write_bytes(step.read_bytes())
    _write_prices(folder / "prices.csv")
    return folder


RUN_PAGES = sorted({b.page for b in PYTHON if b.not_run is None})


@pytest.mark.slow
@pytest.mark.parametrize("page", RUN_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_page_blocks_run(page: Path, page_folder: Path, tmp_path: Path,
                         monkeypatch: pytest.MonkeyPatch) -> None:
    for f in page_folder.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__docs__", **_given()}
    blocks = [b for b in PYTHON if b.page == page and b.not_run is None]
    servers = {b.server for b in blocks if b.server}
    assert len(servers) <= 1, f"{page.name}: one server per page, not {sorted(servers)}"
    with contextlib.ExitStack() as stack:
        ports = {}
        if servers:
            from serve.conftest import serving  # tests/serve's real `rnnstream serve` starter

            args = next(iter(servers)).split()
            running = stack.enter_context(serving([tmp_path / args[0]], *args[1:]))
            ports = {"127.0.0.1:8000": f"127.0.0.1:{running.http_port}",
                     "127.0.0.1:8001": f"127.0.0.1:{running.grpc_port}"}
        for block in blocks:
            code = block.code
            for fixed, free in ports.items():
                code = code.replace(fixed, free)
            try:
                exec(compile(code, block.where, "exec"), namespace)  # noqa: S102 - our own docs
            except Exception as e:  # report which block, keep the original as the cause
                raise AssertionError(f"{block.where} failed: {type(e).__name__}: {e}") from e


def test_no_fenced_block_is_indented_into_a_list() -> None:
    """Python-Markdown (the site) does not nest a fenced block in a list item: it ends the list
    and prints the rest as one paragraph. GitHub does; the site is the reference."""
    nested = [f"{p.relative_to(ROOT)}:{i}" for p in PAGES if p.parent.name == "docs"
              for i, line in enumerate(p.read_text(encoding="utf-8").split("\n"), 1)
              if re.match(r"^ +```", line)]
    assert not nested, nested


# --- links --------------------------------------------------------------------------------------

def _slug_mkdocs(title: str) -> str:
    """Python-Markdown's toc slugify (the site's anchors)."""
    text = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _slug_github(title: str) -> str:
    """GitHub's heading anchors (how the README and docs read on GitHub)."""
    text = re.sub(r"[^\w\- ]", "", title.strip().lower())
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    found: set[str] = set()
    for line in _prose(page).split("\n"):
        m = HEADING.match(line)
        if m:
            title = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", m.group(2))
            found |= {_slug_mkdocs(title), _slug_github(title)}
    return found


def _links(page: Path) -> Iterator[str]:
    for m in LINK.finditer(_prose(page)):
        target = m.group(1)
        if not re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            yield target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    broken = []
    for target in _links(page):
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading with that anchor in {dest.name})")
    assert not broken, f"{page.relative_to(ROOT)}: broken links: {broken}"


# --- API names in the prose ---------------------------------------------------------------------

CLASSES = ("Predictor", "StreamPool", "LiveStream", "LiveScores", "LiveConfig", "ModelContract")


def _resolves(dotted: str) -> bool:
    """True when the longest importable prefix of ``dotted`` has the rest as attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            with warnings.catch_warnings():  # the docs name deprecated aliases as such
                warnings.simplefilter("ignore", DeprecationWarning)
                obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def test_api_names_in_the_prose_exist() -> None:
    import rnnstream.runtime as runtime

    classes = {name: getattr(runtime, name) for name in CLASSES}
    wrong = set()
    for page in (p for p in PAGES if p.name != "CHANGELOG.md"):  # history names what is gone
        for span in (s.strip() for s in re.findall(r"`([^`\n]+)`", _prose(page))):
            m = re.fullmatch(r"(rnnstream(?:\.\w+)+)(\(.*\))?", span)
            if m and not _resolves(m.group(1)):
                wrong.add(f"{page.name}: {span}")
            m = re.fullmatch(r"(\w+)\.(\w+)(\(.*\))?", span)
            if m and m.group(1) in classes and not hasattr(classes[m.group(1)], m.group(2)):
                wrong.add(f"{page.name}: {span}")
            m = re.fullmatch(r"(\w+)\((.*)\)", span)
            if m and m.group(1) in classes:
                wrong |= {f"{page.name}: {span} ({kw}=)" for kw in re.findall(r"(\w+)=", m.group(2))
                          if not _takes(classes[m.group(1)], kw)}
    assert not wrong, sorted(wrong)


# --- make targets and command-line flags --------------------------------------------------------

def _make_targets() -> set[str]:
    text = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][\w-]*)\s*:(?!=)", text, flags=re.M))


def _spans(page: Path) -> Iterator[str]:
    """Backticked spans of the prose, and every line of the shell-ish code blocks."""
    yield from re.findall(r"`([^`\n]+)`", _prose(page))
    for b in _blocks(page):
        if b.lang in ("", "sh", "bash", "shell", "console"):
            yield from b.code.split("\n")


def test_make_targets_named_in_the_docs_exist() -> None:
    targets = _make_targets()
    missing = {f"{p.relative_to(ROOT)}: make {name}"
               for p in PAGES for span in _spans(p)
               for name in re.findall(r"(?:^|[\s;&(|])make ([a-z][\w-]*)", span)
               if name not in targets}
    assert not missing, sorted(missing)


def _command_help() -> dict[str, str]:
    from rnnstream.cli.main import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: p.format_help() for name, p in sub.choices.items()}


def _flags_in(help_text: str) -> set[str]:
    return set(re.findall(r"(?<![\w-])--[a-z][\w-]*", help_text))


def test_cli_flags_named_in_the_docs_exist() -> None:
    helps = _command_help()
    flags = {cmd: _flags_in(text) | {"--help"} for cmd, text in helps.items()}
    every = set().union(*flags.values())
    wrong = set()
    command = re.compile(r"\brnnstream (" + "|".join(helps) + r")\b([^|#>;]*)")
    for page in PAGES:
        for span in _spans(page):
            for cmd, rest in command.findall(span):
                wrong |= {f"{page.name}: rnnstream {cmd} {f}"
                          for f in re.findall(r"(?<![\w-])--[a-z][\w-]*", rest)
                          if f not in flags[cmd]}
            if page.name in ("cli.md", "serving.md") and span.lstrip().startswith("--"):
                flag = re.match(r"\s*(--[a-z][\w-]*)", span)
                if flag and flag.group(1) not in every:
                    wrong.add(f"{page.name}: `{span}` is no rnnstream command's flag")
    assert not wrong, sorted(wrong)


def test_every_command_is_documented_in_cli_page() -> None:
    text = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    missing = [cmd for cmd in _command_help() if f"rnnstream {cmd}" not in text]
    assert not missing, f"docs/cli.md never shows: {missing}"
