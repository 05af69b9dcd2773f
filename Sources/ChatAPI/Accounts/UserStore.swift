import Foundation
import ChatCore

/// The User object of API.md.
public struct User: Codable, Sendable, Equatable {
    public let id: String
    public let email: String
    public let display_name: String
    public let email_verified: Bool
    public let created_at: String
}

/// SQL for users and email tokens. Values always travel as bind parameters.
public struct UserStore {
    let db: PostgresConnection

    /// The columns of a User, with times formatted as RFC 3339 UTC with milliseconds.
    static let userColumns = """
        id::text AS id, email, display_name, email_verified, password_hash,
        to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') AS created_at
        """

    public struct Row {
        public let user: User
        public let passwordHash: String?
    }

    static func decode(_ row: PostgresRow) throws -> Row {
        Row(user: User(id: try row.string("id"), email: try row.string("email"), display_name: try row.string("display_name"),
                       email_verified: try row.bool("email_verified"), created_at: try row.string("created_at")),
            passwordHash: try row.optionalString("password_hash"))
    }

    public func byEmail(_ email: String) throws -> Row? {
        try db.query("SELECT \(UserStore.userColumns) FROM users WHERE email_lower = lower($1)", [email]).first.map(UserStore.decode)
    }

    public func byID(_ id: String) throws -> Row? {
        guard UUID(uuidString: id) != nil else { return nil }
        return try db.query("SELECT \(UserStore.userColumns) FROM users WHERE id = $1", [id]).first.map(UserStore.decode)
    }

    /// Inserts an unverified local user; nil when the email is taken.
    public func create(email: String, displayName: String, passwordHash: String?, verified: Bool = false) throws -> User? {
        do {
            return try db.query("""
                INSERT INTO users (email, display_name, password_hash, email_verified) VALUES ($1, $2, $3, $4)
                RETURNING \(UserStore.userColumns)
                """, [email, displayName, passwordHash, verified]).first.map { try UserStore.decode($0).user }
        } catch let e as PostgresError where e.isUniqueViolation {
            return nil
        }
    }

    public func setPassword(_ userID: String, hash: String?) throws {
        try db.query("UPDATE users SET password_hash = $2, updated_at = now() WHERE id = $1", [userID, hash])
    }

    public func markVerified(_ userID: String) throws {
        try db.query("UPDATE users SET email_verified = true, updated_at = now() WHERE id = $1", [userID])
    }

    public func setDisplayName(_ userID: String, _ name: String) throws -> User? {
        try db.query("UPDATE users SET display_name = $2, updated_at = now() WHERE id = $1 RETURNING \(UserStore.userColumns)",
                     [userID, name]).first.map { try UserStore.decode($0).user }
    }

    // MARK: email tokens (only their SHA-256 is stored)

    public enum Purpose: String { case verify, reset }

    /// Makes a 256-bit token, stores its hash, and returns the token (for the email only).
    public func issueToken(userID: String, purpose: Purpose, ttlSeconds: Int) throws -> String {
        let token = Crypto.randomToken(bytes: 32)
        try db.query("""
            INSERT INTO email_tokens (token_hash, user_id, purpose, expires_at)
            VALUES ($1, $2, $3, now() + make_interval(secs => $4))
            """, [Crypto.sha256Hex(token), userID, purpose.rawValue, ttlSeconds])
        return token
    }

    /// Marks the token used and returns its user, or nil when it is unknown, used or expired.
    /// Single use holds under concurrency: the UPDATE's WHERE takes it once.
    public func consumeToken(_ token: String, purpose: Purpose) throws -> String? {
        guard !token.isEmpty, token.count <= 128 else { return nil }
        return try db.query("""
            UPDATE email_tokens SET used_at = now()
            WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()
            RETURNING user_id::text AS user_id
            """, [Crypto.sha256Hex(token), purpose.rawValue]).first.map { try $0.string("user_id") }
    }
}
