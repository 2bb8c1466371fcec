"""Reports of the experiments: :mod:`~escapelab.report.tables` (Markdown, CSV, HTML),
:mod:`~escapelab.report.style` (the one figure style), and the figure modules
:mod:`~escapelab.report.figures`, :mod:`~escapelab.report.ticket_figures`,
:mod:`~escapelab.report.geometry_figures` and :mod:`~escapelab.report.counts`.

Nothing is imported here, so that ``escapelab.report.tables`` stays free of matplotlib.
"""
