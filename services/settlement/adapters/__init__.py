"""Settlement's I/O behind small ports: payment gateways (memory, Redis sandbox, Stripe)."""
