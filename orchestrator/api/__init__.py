"""The HTTP API process (Starlette): app, auth, idempotency, run routes, waiting, delivery view, ops."""
