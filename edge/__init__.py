"""The edge gateway: drivers -> validate -> edge detection -> aggregate ->
store-and-forward -> NATS.

Not built yet (the edge gateway issue); see README "Status". The validation it will run
is :mod:`schemas.telemetry`, and its edge detection will reuse :mod:`twins.detectors`.
"""
