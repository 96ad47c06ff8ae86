"""A fleet of gateways: what lets several instances share one PostgreSQL and sit behind one
HAProxy. `proxy_protocol` and `listener` take the caller's real address from a trusted
balancer; `instances` registers this instance and notices one that stopped heart-beating.
No Textual here, like the rest of `proxy`.
"""
