"""Integrations with third-party libraries, one module each, installed as
``resilience.integrations.<name>``. Each needs its extra
(``pip install "resilience-patterns[asyncpg]"``) and uses only the public API
of the core."""
