import Foundation
import ChatCore

/// Online/offline across relays, in Redis: `presence:<user>` is a sorted set of relay ids
/// scored by when their claim expires. A relay claims a user while it holds a socket of
/// theirs and refreshes its claims every 30 s; a relay that dies stops refreshing and its
/// claims lapse after 90 s. A user is online while any claim is live.
struct Presence {
    static let ttl: Double = 90

    /// Claims `user` for `relay`; true when this made the user go online.
    static func claim(_ redis: RedisConnection, user: String, relay: String) throws -> Bool {
        let now = Date().timeIntervalSince1970
        let r = try redis.pipeline([
            ["ZREMRANGEBYSCORE", "presence:" + user, "-inf", String(now)],
            ["ZADD", "presence:" + user, String(now + ttl), relay],
            ["ZCARD", "presence:" + user],
            ["EXPIRE", "presence:" + user, Int(ttl) * 2],
        ])
        return r[1].int == 1 && r[2].int == 1
    }

    /// Releases the claim; true when this made the user go offline.
    static func release(_ redis: RedisConnection, user: String, relay: String) throws -> Bool {
        let now = Date().timeIntervalSince1970
        let r = try redis.pipeline([
            ["ZREM", "presence:" + user, relay],
            ["ZREMRANGEBYSCORE", "presence:" + user, "-inf", String(now)],
            ["ZCARD", "presence:" + user],
        ])
        return r[0].int == 1 && r[2].int == 0
    }

    static func refresh(_ redis: RedisConnection, users: [String], relay: String) throws {
        guard !users.isEmpty else { return }
        let expiry = String(Date().timeIntervalSince1970 + ttl)
        try redis.pipeline(users.flatMap { u -> [[any RedisArgument]] in
            [["ZADD", "presence:" + u, expiry, relay], ["EXPIRE", "presence:" + u, Int(ttl) * 2]]
        })
    }

    static func event(user: String, status: String) -> [UInt8] {
        Array("{\"type\":\"presence\",\"user_id\":\(JSON.quote(user)),\"status\":\"\(status)\"}".utf8)
    }
}
