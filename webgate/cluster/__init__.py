"""webgate as one node of a cluster (issue 15, docs/cluster.md): the shared state in Redis
(session IDs, the index of live calls, registered web users, cluster-wide limits, node
heartbeats), next to the in-memory registry that a single process uses."""
