import Foundation

/// Server-side sessions in Redis. A JWT names its session by `sid`; the token is refused
/// as soon as the session is gone (logout, revoke, password reset, expiry), even while its
/// signature and `exp` are still good.
///
/// Keys: `session:<sid>` hash {user_id, created_at, last_seen_at, user_agent} with a TTL;
/// `user_sessions:<user_id>` set of sids (pruned lazily when listing).
public struct SessionStore {
    public struct Session: Sendable, Equatable {
        public let id: String
        public let userID: String
        public let createdAt: String
        public let lastSeenAt: String
        public let userAgent: String
    }

    public let redis: RedisConnection
    public let ttlSeconds: Int

    public init(redis: RedisConnection, ttlSeconds: Int) {
        self.redis = redis
        self.ttlSeconds = ttlSeconds
    }

    static func key(_ sid: String) -> String { "session:" + sid }
    static func userKey(_ uid: String) -> String { "user_sessions:" + uid }

    /// Creates a session and returns its id (128 random bits, URL-safe).
    public func create(userID: String, userAgent: String, now: Date = Date()) throws -> String {
        let sid = Crypto.randomToken(bytes: 16)
        let ts = Timestamp.format(now)
        let replies = try redis.pipeline([
            ["HSET", SessionStore.key(sid), "user_id", userID, "created_at", ts, "last_seen_at", ts, "user_agent", String(userAgent.prefix(256))],
            ["EXPIRE", SessionStore.key(sid), ttlSeconds],
            ["SADD", SessionStore.userKey(userID), sid],
            ["EXPIRE", SessionStore.userKey(userID), ttlSeconds],
        ])
        if case .error(let m) = replies[0] { throw RedisCommandError(message: m) }
        return sid
    }

    /// The user id owning a live session, or nil.
    public func userID(of sid: String) throws -> String? {
        guard !sid.isEmpty, sid.count <= 64 else { return nil }
        return try redis.command("HGET", SessionStore.key(sid), "user_id").string
    }

    /// The owner of a live session, recording its activity in the same round trip (the
    /// `last_seen_at` write happens at most once a minute per session).
    public func authenticate(_ sid: String, now: Date = Date()) throws -> String? {
        guard !sid.isEmpty, sid.count <= 64 else { return nil }
        let replies = try redis.pipeline([["HGET", SessionStore.key(sid), "user_id"],
                                          ["SET", "session_touch:" + sid, "1", "EX", 60, "NX"]])
        guard let owner = replies[0].string else { return nil }
        if replies[1] != .null {
            try redis.pipeline([["HSET", SessionStore.key(sid), "last_seen_at", Timestamp.format(now)]])
        }
        return owner
    }

    public func list(userID: String) throws -> [Session] {
        guard let sids = try redis.command("SMEMBERS", SessionStore.userKey(userID)).array else { return [] }
        var out = [Session]()
        for item in sids {
            guard let sid = item.string else { continue }
            let fields = try redis.command("HGETALL", SessionStore.key(sid)).array ?? []
            var map: [String: String] = [:]
            var i = 0
            while i + 1 < fields.count {
                map[fields[i].string ?? ""] = fields[i + 1].string ?? ""
                i += 2
            }
            guard map["user_id"] == userID else {
                try redis.command("SREM", SessionStore.userKey(userID), sid)
                continue
            }
            out.append(Session(id: sid, userID: userID, createdAt: map["created_at"] ?? "", lastSeenAt: map["last_seen_at"] ?? "",
                               userAgent: map["user_agent"] ?? ""))
        }
        return out.sorted { $0.createdAt < $1.createdAt }
    }

    /// Deletes a session; true when it existed and belonged to `userID`.
    @discardableResult
    public func revoke(_ sid: String, userID: String) throws -> Bool {
        guard try self.userID(of: sid) == userID else { return false }
        try redis.pipeline([["DEL", SessionStore.key(sid)], ["SREM", SessionStore.userKey(userID), sid]])
        return true
    }

    /// Deletes every session of a user; returns the revoked ids.
    public func revokeAll(userID: String, except keep: String? = nil) throws -> [String] {
        let sessions = try list(userID: userID).map(\.id).filter { $0 != keep }
        for sid in sessions { try revoke(sid, userID: userID) }
        return sessions
    }
}
