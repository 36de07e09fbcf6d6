"""The run core both executors share: what a run reads from and writes to the store, and one
`advance` step (observe → plan → apply) over a `Launcher`. The local executor's launcher starts
processes, the operator's creates Jobs; everything else about a run happens here, once."""
