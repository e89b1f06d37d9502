"""Contracts shared by the trainer and every service: imported, never copied.

- `schema`: the feature schema and the targets;
- `models`: the registered models (one list), aliases, served-version tags;
- `registry`: reading the registry with one "absent" policy;
- `drift`: reference profiles and drift statistics;
- `synthetic`: the seeded network-telemetry generator (trainer and traffic simulator);
- `settings`: comma-separated lists and Postgres URIs in settings;
- `errors`: the one error shape every HTTP service answers with, and its FastAPI handlers;
- `guard`: the Host check, the body limit and the control token every HTTP service applies.

Nothing here imports the trainer or a service, and nothing happens at import time.
"""
