-- People who log in to the dashboard (store/users.py, `twinfleet user add`). Passwords are
-- kept only as argon2id hashes (their own salt and parameters inside the hash string).
CREATE TABLE users (
    name          text PRIMARY KEY,
    role          text NOT NULL CHECK (role IN ('viewer', 'operator', 'engineer', 'admin')),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled      boolean NOT NULL DEFAULT false
);

-- Their sessions (store/sessions.py). The browser holds a signed token naming the session;
-- a session counts only while it is here, not revoked (logout, user disabled) and not
-- expired, so logging out ends it on every API replica at once.
CREATE TABLE sessions (
    session_id text PRIMARY KEY,
    user_name  text NOT NULL REFERENCES users (name),
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    client     text
);
CREATE INDEX sessions_user ON sessions (user_name);
CREATE INDEX sessions_expiry ON sessions (expires_at);
