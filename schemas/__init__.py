"""pydantic models for everything that crosses a boundary: wire formats, the plant
description, twin/anomaly/RUL/work-order records and NATS subject names.

``schemas`` imports no other package of ours.
"""

from schemas.anomaly import AnomalyRecord, AnomalyType, Severity
from schemas.common import (
    EpochMs,
    FailureMode,
    Identifier,
    MachineKind,
    Quality,
    SensorId,
    SensorKind,
    UtcDatetime,
    sensor_id,
)
from schemas.maintenance import (
    FailurePrediction,
    PartRequirement,
    Priority,
    Shift,
    Technician,
    WorkOrder,
    WorkOrderStatus,
    WorkOrderType,
)
from schemas.plant import (
    MachineSpec,
    MachineType,
    Plant,
    PlantFileError,
    RatedValues,
    SensorSpec,
    load_plant,
    parse_plant,
)
from schemas.rul import FAILURE_HORIZONS_H, ContributingFactor, RulPrediction, SurvivalPoint
from schemas.telemetry import (
    MAX_BATCH_READINGS,
    AggregateColumns,
    EdgeAnomaly,
    ReadingColumns,
    SensorReading,
    TelemetryBatch,
)
from schemas.twin import MachineStatus, SensorState, TwinState

__all__ = [
    "FAILURE_HORIZONS_H",
    "MAX_BATCH_READINGS",
    "AggregateColumns",
    "AnomalyRecord",
    "AnomalyType",
    "ContributingFactor",
    "EdgeAnomaly",
    "EpochMs",
    "FailureMode",
    "FailurePrediction",
    "Identifier",
    "MachineKind",
    "MachineSpec",
    "MachineStatus",
    "MachineType",
    "PartRequirement",
    "Plant",
    "PlantFileError",
    "Priority",
    "Quality",
    "RatedValues",
    "ReadingColumns",
    "RulPrediction",
    "SensorId",
    "SensorKind",
    "SensorReading",
    "SensorSpec",
    "SensorState",
    "Severity",
    "Shift",
    "SurvivalPoint",
    "Technician",
    "TelemetryBatch",
    "TwinState",
    "UtcDatetime",
    "WorkOrder",
    "WorkOrderStatus",
    "WorkOrderType",
    "load_plant",
    "parse_plant",
    "sensor_id",
]
