"""Write every page of the book's table of contents as a Jupyter notebook that runs from a plain clone.

    python book/_notebooks.py OUTPUT_FOLDER        (what `make lab` runs)

The pages are MyST markdown notebooks; myst-nb (installed with jupyter-book) reads them into notebooks.
Each notebook gets one first cell that puts the clone's root and `book/` on `sys.path` and makes `book/`
the working folder — what the book build does with PYTHONPATH and its working directory — so the
notebook runs wherever it is opened, without the build. Outputs are not stored: the student runs them.
"""
import pathlib
import sys

import nbformat
import yaml
from myst_nb.core.read import read_myst_markdown_notebook

BOOK = pathlib.Path(__file__).resolve().parent
ROOT = BOOK.parent

SETUP = '''# Set-up for running this page as a notebook (the book build does the same with PYTHONPATH):
# the package and the book's helpers are imported from the clone, and pages run in its book/ folder.
import os, sys
sys.path[:0] = [{root!r}, {book!r}]
os.chdir({book!r})'''


def toc_pages(toc):
    """Page names of the table of contents, in reading order."""
    pages = [toc["root"]]
    for entry in toc.get("chapters", []) + [c for part in toc.get("parts", []) for c in part["chapters"]]:
        pages.append(entry["file"])
    return pages


def write_notebooks(output):
    output.mkdir(parents=True, exist_ok=True)
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    written = []
    for page in toc_pages(toc):
        source = BOOK / f"{page}.md"
        if not source.is_file():
            print(f"skipped {page}: no {source.name} (only MyST markdown pages are converted)")
            continue
        notebook = read_myst_markdown_notebook(source.read_text())
        setup = nbformat.v4.new_code_cell(SETUP.format(root=str(ROOT), book=str(BOOK)))
        setup.metadata["tags"] = ["setup"]
        notebook.cells.insert(0, setup)
        target = output / f"{page}.ipynb"
        nbformat.write(notebook, target)
        written.append(target.name)
    return written


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    folder = pathlib.Path(sys.argv[1]).resolve()
    names = write_notebooks(folder)
    print(f"{len(names)} notebooks in {folder}: {', '.join(names)}")
