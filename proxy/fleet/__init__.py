"""A fleet of gateways: what lets several instances share one PostgreSQL and sit behind one
HAProxy.

Where it sits: beside the runtime (`proxy.runtime`), which it joins to the shared state
(`storage.pg_state`); no Textual here, like the rest of `proxy`. `settings` reads `[state]` and
the fleet's `[gateway]` keys; `proxy_protocol` (sans-IO) and `listener` take the caller's real
address from a trusted balancer; `member` opens the shared state, registers this instance with
a heartbeat and reaps the ones that stopped; `throttle` counts failed logins across the fleet;
`peer` and `watch` let an approver on one instance watch a session carried by another.
"""
