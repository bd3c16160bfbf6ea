"""The entrypoints: the HTTP API (Litestar) and the `ledger` command line.

HTTP: `api.app.create_app` builds the app; `api.gate` authenticates, authorises and decodes every
/v1 request; `api.command_routes` and `api.read_routes` are the handlers (a few lines each);
`api.wire` holds the msgspec wire types, `api.render` turns records and read views into them;
`api.problems` maps every refusal code to its status (RFC 9457); `api.services` owns the Ledger,
read models and projection runner of one app; `api.metrics` and `api.request_id` are the
operational middleware; `api.serve` is `ledger serve` and `ledger token create`. Nothing imports
an entrypoint (DESIGN.md).
"""
