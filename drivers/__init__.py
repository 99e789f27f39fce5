"""Field-protocol drivers: OPC UA (asyncua) and Modbus TCP (pymodbus) clients, and
simulated plant servers that speak those protocols.

Not built yet (the edge gateway issue). Today the plant simulator in
:mod:`twins.simulator` produces telemetry batches directly; see README "Status".
"""
