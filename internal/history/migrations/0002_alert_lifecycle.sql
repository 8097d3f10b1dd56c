-- 0002: occurrences whose cleared event is stored are cleared. Before this
-- version the latest state was chosen by event time, and a stale alert's
-- cleared event (the fresh reading's time) may be earlier than its raised
-- event (detection time): such occurrences stayed raised.
UPDATE alerts a SET state = 'cleared', cleared_at = COALESCE(a.cleared_at, e.ts), severity = e.severity, message = e.message, vals = e.vals
FROM (SELECT DISTINCT ON (id) id, ts, severity, message, vals FROM alert_events WHERE state = 'cleared' ORDER BY id, ts DESC) e
WHERE e.id = a.id AND a.state <> 'cleared';
