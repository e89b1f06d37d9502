"""The platform's one library package: helpers that more than one service runs.

A service never imports another service's internals (tests/static/test_imports.py fails if one
does). Names that services share (experiments, accounts, models, schemas) live in `contracts/`; code
that two services both run lives here, each module small and about one thing:

- `passwords`: generating secrets and refusing weak ones (access, the MLflow server's start-up,
  the local launcher). Standard library only: `make participant` runs access with the host's python3.
- `s3`: creating the artifact bucket if missing (the s3init job, and backup's restore).
- `sockets`: the listening-socket hand-over between the gateway's socket listener and the gateway.
  Standard library only: the listener's image holds this module and nothing else of the platform.

Why a package under `services/` and not in `contracts/`: contracts are what services agree on
(names, schemas, formats) and every image carries them; these are pieces of behaviour, and each image
copies only the modules it runs (its Dockerfile names them). This file imports nothing, so importing
one module never drags in another's dependencies (boto3 for `s3`).
"""
