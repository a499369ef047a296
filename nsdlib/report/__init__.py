"""What the chapters show: tables (ours beside the paper's), figures, the explorer, the cross-subject report.

- ``tables``: the paper's Tables 2-6 layouts with our rows, and the chapters' other tables
  (with bootstrap intervals where the chapters ask whether a difference is real)
- ``sentences``: prose read from those tables, so that no chapter types a result into its text
- ``figures``: image grids, the paper's Fig. 1 slices, chapter 01's GLM diagnostics, the zoo figure
- ``explorer``: chapter 10's explorers (ipywidgets with a kernel; static HTML and JavaScript without)
- ``rendering``: executed chapters prepared for the HTML book, and the Sphinx hook serving MathJax locally
- ``cross_subject``: the cross-subject report (Table 5 from per-subject results) and the Sphinx
  hook that puts it in the book

The floor above :mod:`nsdlib.pipeline`: it may import the pipeline and everything below it;
nothing below imports it.
"""
