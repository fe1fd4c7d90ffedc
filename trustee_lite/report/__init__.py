"""`report`: one self-contained HTML page from the run record: per-step plots (data.py reads the
store, plots.py draws with matplotlib), evaluation and calibration scores, and a trajectory
browser (page.py, page.html)."""
