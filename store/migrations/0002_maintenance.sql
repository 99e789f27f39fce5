-- Alerts (schemas/alerts.py), one row per alert, replaced by its latest change. A false
-- positive stays here with its status: the detectors' feedback.
CREATE TABLE alerts (
    alert_id         text PRIMARY KEY,
    asset_id         text NOT NULL,
    rule_id          text NOT NULL,
    kind             text NOT NULL,
    subject          text NOT NULL,
    severity         text NOT NULL,
    status           text NOT NULL,
    count            integer NOT NULL,
    first_raised_at  timestamptz NOT NULL,
    last_raised_at   timestamptz NOT NULL,
    resolved_at      timestamptz,
    escalation_level integer NOT NULL DEFAULT 0,
    workorder_id     text,
    record           jsonb NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_asset ON alerts (asset_id, first_raised_at);
CREATE INDEX alerts_open ON alerts (status) WHERE status IN ('open', 'acknowledged');

-- What a work order repaired, for the survival model's training lives (store/lives.py).
ALTER TABLE work_orders ADD COLUMN failure_mode text;
UPDATE work_orders SET failure_mode = record->>'failure_mode';
CREATE INDEX work_orders_completed ON work_orders (asset_id, completed_at)
    WHERE status = 'completed';
