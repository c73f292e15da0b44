"""Routers, one per resource; `api.handler` includes them all."""
