-- Users, identities, email tokens, rooms and memberships. Messages live in MongoDB.
CREATE EXTENSION IF NOT EXISTS pgcrypto;

CREATE TABLE users (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email           text NOT NULL,
    email_lower     text GENERATED ALWAYS AS (lower(email)) STORED,
    display_name    text NOT NULL,
    password_hash   text,                      -- argon2id encoded; NULL for OAuth-only accounts
    email_verified  boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower ON users (email_lower);
CREATE INDEX users_display_name_lower ON users (lower(display_name) text_pattern_ops);

CREATE TABLE oauth_identities (
    provider        text NOT NULL,
    subject         text NOT NULL,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email           text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (provider, subject)
);
CREATE INDEX oauth_identities_user ON oauth_identities (user_id);

-- Verification and reset tokens: only the SHA-256 of the token is stored.
CREATE TABLE email_tokens (
    token_hash      text PRIMARY KEY,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose         text NOT NULL CHECK (purpose IN ('verify', 'reset')),
    expires_at      timestamptz NOT NULL,
    used_at         timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX email_tokens_user ON email_tokens (user_id, purpose);

CREATE TABLE rooms (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('public', 'private', 'direct')),
    created_by      uuid NOT NULL REFERENCES users (id),
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seq        bigint NOT NULL DEFAULT 0,
    direct_key      text UNIQUE                -- "<smaller uuid>:<larger uuid>" for direct rooms
);
CREATE INDEX rooms_public_name ON rooms (lower(name) text_pattern_ops) WHERE kind = 'public';

CREATE TABLE room_members (
    room_id         uuid NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    user_id         uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role            text NOT NULL CHECK (role IN ('owner', 'admin', 'member')),
    joined_at       timestamptz NOT NULL DEFAULT now(),
    last_read_seq   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (room_id, user_id)
);
CREATE INDEX room_members_user ON room_members (user_id);
