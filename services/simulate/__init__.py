"""Demo traffic for the gateway: predictions for both models, optionally drifted, plus delayed feedback.

`python -m services.simulate --help`; the pieces live in `services.simulate.traffic`.
"""
