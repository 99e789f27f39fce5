"""History and operational records in PostgreSQL (psycopg 3).

- :mod:`store.migrations`: versioned schema migrations, applied on start, safe to repeat;
- :mod:`store.partitions`: time partitions made on demand, retention per tier;
- :mod:`store.blocks`: the encoding of compacted per-sensor blocks (pure);
- :mod:`store.copy`: binary COPY buffers built with numpy (pure);
- :mod:`store.rollups`: per-bucket partial aggregates that merge exactly (pure);
- :mod:`store.writer`: the JetStream consumer that writes telemetry and events;
- :mod:`store.compaction`: raw days into per-sensor-hour blocks;
- :mod:`store.queries`: what the API asks: time series, machine history;
- :mod:`store.registry`: assets, sensors and technicians from the plant file;
- :mod:`store.users`: people who log in to the dashboard (argon2id password hashes);
- :mod:`store.sessions`: their sessions, looked up on every request, revoked at logout.
"""
