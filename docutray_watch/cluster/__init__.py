"""Multi-node mode: several daemons share the work through PostgreSQL, on procrastinate.

The control plane, one concern per module (each needs the `cluster` extra; nothing here is
imported by a single-node daemon):

- `app`: the procrastinate App factory over psycopg, queue names (`node.<name>`);
- `schema`: `init_schema(url)` (`docutray-watch cluster init`) and `check_schema(url)`;
- `membership`: `join_cluster(config)` at start (the checks in order, the heartbeat) and
  `leave()` at a clean stop;
- `nodes`: the node registry (register, heartbeat, deregister, list);
- `fingerprint`: the configuration every node must share, stored in the database;
- `reassign`: moving a dead node's local queue to another node;
- `errors`: why a node cannot join (exit 78) or reach the database (exit 69);
- `cli`: the `docutray-watch cluster` commands;
- `limits`: execution slots and the request rate for the whole cluster, in rows;
- `jobs`: the procrastinate jobs, one phase each (`handoff`: discovery's handoff that defers a
  document's first job; `periodic`: the shared scan, stalled-job recovery, the rate's raise;
  `services`: queue names, priorities and what the jobs share; `claiming`: a shared file whose
  content another document claims, a duplicate or the content's next generation);
- `runtime`: `run` in multi-node mode (`ClusterNode`); `node_daemon`: the process around it
  (listeners, status page, SIGHUP, sd_notify: `NodeDaemon`, `run_cluster_daemon`); `outages`:
  when the database was away (deadlines pause, /readyz says why).

The config block itself is `docutray_watch.config.ClusterConfig` (`cluster:`).
"""
