"""The operator: Kopf handlers (thin), manifest builders (pure), the API client (I/O)."""
