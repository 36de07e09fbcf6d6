"""The local executor: `conveyor run` runs a pipeline on this machine, a process per stage."""
