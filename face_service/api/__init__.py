"""The HTTP layer: one router per resource (routes/), their bodies (schemas/), the dependencies
the routes declare, reading uploads, admission control, middleware and error answers."""
