"""fleetbench coordinator: the fleet service and the ranking of architectures across devices.

service   MQTT ingest into the store, the loops, systemd;  store  the only code that speaks SQL
reranker  new or degraded device -> sample job -> decision -> push (a state machine)
deploy    rollouts and signed pushes (a state machine);  ranking  tables, predictors, decisions
cli       the commands;  demo, report, simulated  the whole loop on one machine
"""
