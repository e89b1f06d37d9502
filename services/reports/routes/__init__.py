"""The reports service's routes, one module per area: `pages` (the HTML: /, /reports/..., /leaderboard),
`api` (/api/leaderboard) and `status` (/metrics, /health). `deps` reads what they need from the
app's state."""
