"""The gateway's routes, one module per area: `models` (everything under /models: the two scoring
routes, declared for the OpenAPI description only, feedback and the served models) and `status`
(/health, /metrics). `deps` reads what they need from the app's state.

POST /models/{name}/predict and /invocations are answered by `scoring.ScoringFastPath` before
FastAPI (a third of the gateway's CPU per request, `make bench`): what FastAPI would apply to them
(middleware, dependencies) is refused at startup by app.py."""
