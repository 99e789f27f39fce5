"""The edge gateway: drivers -> validate -> edge detection -> aggregate ->
store-and-forward -> NATS.

* :mod:`edge.config`: the gateway's configuration file;
* :mod:`edge.detection`: rules and robust z-score from :mod:`twins.detectors`, per value;
* :mod:`edge.forwarding`: 1-minute aggregates, full resolution around anomalies;
* :mod:`edge.store`: the gateway's own leaf node (JetStream domain ``edge-<id>``);
* :mod:`edge.gateway`: the pipeline and its counters (``twinfleet edge --config FILE``).
"""
