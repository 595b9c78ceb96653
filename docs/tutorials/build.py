"""Execute the tutorials and render them to HTML.

    python docs/tutorials/build.py [--out DIR] [NOTEBOOK ...]

Each notebook of this folder (or those named) is run top to bottom in a fresh kernel (nbclient,
working directory = this folder) and written, with its outputs, as ``DIR/NAME.html`` (default
``docs/tutorials/html``). The notebooks themselves stay without outputs. Needs the ``[docs]``
extra (nbconvert, nbclient, ipykernel, latex2mathml) and, for notebook 6, ``[train]``. A notebook
that fails stops the build with its error on one line; files are written atomically.

Equations (``$...$`` and ``$$...$$`` in markdown cells) are converted to MathML at build time
(latex2mathml), so the pages need no script and no network: every current browser draws MathML.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


#: A small page style (the nbconvert "lab" template inlines ~250 KiB of CSS into every page).
PAGE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; line-height: 1.5; color: #1f2328;
       max-width: 62rem; margin: 1.5rem auto; padding: 0 1rem; }
nav { font-size: .9rem; border-bottom: 1px solid #d0d7de; padding-bottom: .4rem; margin-bottom: 1rem; }
nav a { margin-right: 1rem; }
.prompt, .anchor-link { display: none; }
.input_area { background: #f6f8fa; border: 1px solid #d0d7de; border-radius: 4px; margin: .6rem 0 .2rem; }
.input_area pre, .output_text pre { margin: 0; padding: .5rem .75rem; overflow-x: auto; font-size: .82rem;
                                    line-height: 1.35; }
.output_text pre { border-left: 3px solid #d0d7de; }
.output_error pre { border-left-color: #cf222e; }
.output_png img { max-width: 100%; }
.rendered_html table { border-collapse: collapse; margin: .5rem 0; }
.rendered_html th, .rendered_html td { border: 1px solid #d0d7de; padding: .2rem .6rem; }
.rendered_html code { background: #f6f8fa; padding: 0 .2rem; border-radius: 3px; }
"""

#: Code in markdown (fenced blocks, then inline spans): dollar signs there are not mathematics.
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)
#: Display math first, then inline math (not across a blank line, not ``\$``).
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$(?!\s)((?:[^$\n]|\n(?!\s*\n))+?)(?<![\s\\])\$", re.S)


def markdown_math_to_mathml(text: str) -> str:
    """Replace the TeX of a markdown cell by MathML (``<math display="block">`` for ``$$``).

    Raises ``ValueError`` naming the formula that latex2mathml cannot convert."""
    from latex2mathml.converter import convert

    def one(m):
        tex, block = (m.group(1), True) if m.group(1) is not None else (m.group(2), False)
        try:
            return convert(tex.strip(), display="block" if block else "inline")
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            raise ValueError(f"cannot convert ${tex.strip()}$ to MathML ({type(e).__name__}: {e})") from None

    parts = _CODE.split(text)
    return "".join(p if i % 2 else _MATH.sub(one, p) for i, p in enumerate(parts))


def _title(nb, fallback: str) -> str:
    import html

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return html.escape(line[2:].strip())
    return html.escape(fallback)


def page(nb, name: str, names: list) -> str:
    """One self-contained HTML page: the notebook (nbconvert's "basic" template), a small style sheet,
    code highlighting, links to the other tutorials; equations as MathML (no script, works offline)."""
    import copy

    from nbconvert import HTMLExporter
    from pygments.formatters import HtmlFormatter

    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = markdown_math_to_mathml(cell.source)
    body, _ = HTMLExporter(template_name="basic").from_notebook_node(nb)
    i = names.index(name)
    links = ['<a href="index.html">all tutorials</a>']
    if i > 0:
        links.append(f'<a href="{names[i - 1]}.html">&larr; {names[i - 1]}</a>')
    if i + 1 < len(names):
        links.append(f'<a href="{names[i + 1]}.html">{names[i + 1]} &rarr;</a>')
    links.append(f'<a href="../{name}.ipynb">notebook</a>')
    style = PAGE_CSS + HtmlFormatter().get_style_defs(".highlight")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{_title(nb, name)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
            f'<nav>{" ".join(links)}</nav>\n{body}\n</body></html>\n')


def index_page(entries: list) -> str:
    items = "\n".join(f'<li><a href="{name}.html">{title}</a></li>' for name, title in entries)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>srp-np tutorials</title>'
            f"<style>{PAGE_CSS}</style></head>\n<body>\n<h1>srp-np tutorials</h1>\n<p>Rendered from the notebooks "
            f"in <code>docs/tutorials/</code> by <code>python docs/tutorials/build.py</code>; each is executed "
            f"by the test suite (<code>tests/test_tutorials.py</code>).</p>\n<ol>\n{items}\n</ol>\n</body></html>\n")


def _write(target: Path, text: str) -> None:
    from srp_np.fileio import atomic_write

    def write(tmp):
        Path(tmp).write_text(text, encoding="utf-8")

    atomic_write(target, write)


def render(path: Path, out_dir: Path, names: list, timeout: int = 600) -> tuple:
    """Run ``path`` and write its page into ``out_dir``; returns (the HTML file, the title)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    target = out_dir / (path.stem + ".html")
    _write(target, page(nb, path.stem, names))
    return target, _title(nb, path.stem)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="notebooks to build (default: all in docs/tutorials)")
    ap.add_argument("--out", default=str(HERE / "html"), help="output folder (default: docs/tutorials/html)")
    ap.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell (default 600)")
    args = ap.parse_args(argv)
    try:
        import nbconvert  # noqa: F401
        import nbclient  # noqa: F401
        import latex2mathml  # noqa: F401
    except ImportError as e:
        print(f"error: {e.name} is not installed: pip install -e \".[docs]\"", file=sys.stderr)
        return 2
    paths = [Path(p).resolve() for p in args.notebooks] or sorted(HERE.glob("*.ipynb"))
    for p in paths:
        if p.suffix != ".ipynb" or not p.is_file():
            print(f"error: {p} is not a notebook file", file=sys.stderr)
            return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [p.stem for p in sorted(HERE.glob("*.ipynb"))]
    for p in paths:
        t0 = time.perf_counter()
        try:
            target, _ = render(p, out, names if p.stem in names else names + [p.stem], args.timeout)
        except Exception as e:  # a cell failed: say which notebook, on one line
            msg = " ".join(str(e).split())
            print(f"error: {p.name} failed: {type(e).__name__}: {msg[-400:]}", file=sys.stderr)
            return 1
        print(f"{p.name} -> {target} ({target.stat().st_size / 1024:.0f} KiB, {time.perf_counter() - t0:.1f} s)")
    import nbformat

    entries = [(n, _title(nbformat.read(HERE / f"{n}.ipynb", as_version=4), n)) for n in names]
    _write(out / "index.html", index_page(entries))
    return 0


if __name__ == "__main__":
    sys.exit(main())
