"""One reconciler per kind, each glue: get → observe → plan (a pure `engine.plan_*`) → apply →
write status. Nothing in here decides policy."""
