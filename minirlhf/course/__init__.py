"""The course's helpers, not part of the pipeline: what the notebooks use around the stages.

    plots.py      the course's figures (loss curves, probes, frontiers, policy bars), saved atomically
    widgets.py    the notebooks' ipywidgets UIs, each with its logic as plain functions and a text fallback
    exercises.py  the exercises' `check_…` helpers (EXERCISES lists them with their worked solutions)
    shipped.py    the course run shipped under data/: `load_stage`, `load_result`, and `ship_run` that makes it

The stages (minirlhf.world … minirlhf.chat) never import this sub-package; report.py draws its figures with plots.
"""
