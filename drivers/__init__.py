"""Field-protocol drivers: OPC UA (asyncua) and Modbus TCP (pymodbus) clients, and
simulated plant servers that speak those protocols.

Every driver hands what it reads to a sink as :class:`drivers.base.FieldValue` lists;
the edge gateway (:mod:`edge`) validates, detects and forwards them.
"""
