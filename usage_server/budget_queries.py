"""The SQL of budgets, their alerts and the webhook outbox. Values are always bound parameters."""

INSERT_BUDGET = """
INSERT INTO budget (id, owner_id, name, amount_micros, period, timezone, config_id, thresholds,
                    webhook_url, webhook_secret, created_at)
VALUES (:id, :owner_id, :name, :amount_micros, :period, :timezone, :config_id, :thresholds,
        :webhook_url, :webhook_secret, :created_at)
"""

_BUDGET_COLUMNS = """
SELECT id, owner_id, name, amount_micros, period, timezone, config_id, thresholds, webhook_url, created_at
FROM budget
"""

OWNER_BUDGETS = _BUDGET_COLUMNS + """
WHERE owner_id = :owner_id
ORDER BY created_at, id
"""

BUDGET_BY_ID = _BUDGET_COLUMNS + """
WHERE owner_id = :owner_id AND id = :id
"""

DELETE_BUDGET = """
DELETE FROM budget
WHERE owner_id = :owner_id AND id = :id
"""

# Alerts and deliveries go with their budget (ON DELETE CASCADE needs SQLite's foreign_keys,
# which the server turns on; deleted explicitly all the same, children first).
DELETE_BUDGET_DELIVERIES = """
DELETE FROM webhook_delivery
WHERE alert_id IN (SELECT id FROM budget_alert WHERE budget_id = :id)
"""

DELETE_BUDGET_ALERTS = """
DELETE FROM budget_alert
WHERE budget_id = :id
"""

INSERT_ALERT = """
INSERT INTO budget_alert (owner_id, id, budget_id, period_start, period_end, threshold, spent_micros, crossed_at,
                          raised)
VALUES (:owner_id, :id, :budget_id, :period_start, :period_end, :threshold, :spent_micros, :crossed_at, :raised)
ON CONFLICT (owner_id, budget_id, period_start, threshold) DO NOTHING
"""

INSERT_DELIVERY = """
INSERT INTO webhook_delivery (owner_id, alert_id, state, attempts, next_attempt_us)
VALUES (:owner_id, :alert_id, 'pending', 0, :next_attempt_us)
"""

BUDGET_ALERTS = """
SELECT budget_alert.id, threshold, period_start, spent_micros, crossed_at,
       state, attempts, last_error, delivered_at
FROM budget_alert
LEFT JOIN webhook_delivery ON webhook_delivery.alert_id = budget_alert.id
WHERE budget_id = :budget_id AND raised = 1
ORDER BY crossed_at DESC, period_start DESC, threshold DESC
"""

# --- the webhook outbox -------------------------------------------------------------------

# Claimed inside a write transaction, so two processes never lease the same row.
DUE_DELIVERY = """
SELECT alert_id
FROM webhook_delivery
WHERE state = 'pending' AND next_attempt_us <= :now_us AND lease_until_us <= :now_us
ORDER BY next_attempt_us, alert_id
LIMIT 1
"""

LEASE_DELIVERY = """
UPDATE webhook_delivery
SET lease_until_us = :lease_until_us, lease_token = :lease_token
WHERE alert_id = :alert_id AND state = 'pending' AND lease_until_us <= :now_us
"""

DELIVERY_PAYLOAD = """
SELECT budget_alert.id, budget_alert.threshold, budget_alert.period_start, budget_alert.period_end,
       budget_alert.spent_micros, budget_alert.crossed_at, budget.id AS budget_id, budget.name AS budget_name,
       budget.amount_micros, budget.webhook_url, budget.webhook_secret, webhook_delivery.attempts
FROM webhook_delivery
JOIN budget_alert ON budget_alert.id = webhook_delivery.alert_id
JOIN budget ON budget.id = budget_alert.budget_id
WHERE webhook_delivery.alert_id = :alert_id
"""

# Only the holder of the lease records its attempt.
RECORD_ATTEMPT = """
UPDATE webhook_delivery
SET state = :state, attempts = attempts + 1, last_error = :last_error, delivered_at = :delivered_at,
    next_attempt_us = :next_attempt_us, lease_until_us = 0, lease_token = NULL
WHERE alert_id = :alert_id AND lease_token = :lease_token
"""
