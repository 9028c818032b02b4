"""Request and response bodies of the HTTP API, one module per resource beside its routes."""

# The largest page offset a list route takes: far beyond any gallery, and small enough that
# offset + limit stays inside the 64-bit integers SQLite and PostgreSQL compute with (a larger
# one was an OverflowError, a 500).
MAX_PAGE_OFFSET = 10**12
