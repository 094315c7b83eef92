-- Rotation in one statement: consuming a refresh token (setting consumed_at and successor_hash
-- on an unconsumed row) inserts the successor and records the session's activity, inside the
-- same implicit transaction. One round trip to the single writer instead of five.
CREATE TRIGGER refresh_token_rotated
AFTER UPDATE OF consumed_at ON refresh_tokens
WHEN OLD.consumed_at IS NULL AND NEW.consumed_at IS NOT NULL AND NEW.successor_hash IS NOT NULL
BEGIN
    INSERT INTO refresh_tokens (hash, session_id, client_id, issued_at)
    VALUES (NEW.successor_hash, NEW.session_id, NEW.client_id, NEW.consumed_at);
    UPDATE sessions SET last_seen_at = max(last_seen_at, NEW.consumed_at) WHERE id = NEW.session_id;
END;
