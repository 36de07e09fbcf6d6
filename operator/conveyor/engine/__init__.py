"""Pure logic, no I/O: DAG, parameters, validation, cache keys, names, the run planner."""
