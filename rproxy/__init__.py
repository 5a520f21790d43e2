"""rproxy: a cluster-aware RESP proxy that makes a Redis Cluster look like one plain Redis."""

__version__ = "0.1.0"
