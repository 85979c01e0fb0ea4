"""The webhook service's HTTP face: routes, request inputs shared with the mounting app, OpenAPI."""
