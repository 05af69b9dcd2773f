import Foundation
import Logging
import ChatCore

/// Online/offline across relays, in Redis: `presence:<user>` is a sorted set of relay ids
/// scored by when their claim expires. A relay claims a user while it holds a socket of
/// theirs and refreshes its claims every ttl/3 s; a relay that dies stops refreshing and its
/// claims lapse after `ttl` s. A user is online while any claim is live.
///
/// So that a dead relay's users are also announced offline, each relay keeps a heartbeat in
/// `presence_relays` (relay ids scored by when the heartbeat expires) and the users it
/// claims in `relay_users:<relay>`. A live relay that finds a heartbeat expired sweeps that
/// relay (one sweeper per dead relay, by `presence_sweep:<relay>`), and a relay that starts
/// sweeps its own previous run, whose sockets are gone.
struct Presence: Sendable {
    let relay: String
    /// Seconds a claim (and the relay's heartbeat) lives without a refresh.
    let ttl: Double

    private static let relaysKey = "presence_relays"
    private var usersKey: String { "relay_users:" + relay }

    /// Claims `user` for this relay; true when this made the user go online.
    func claim(_ redis: RedisConnection, user: String) throws -> Bool {
        let now = Date().timeIntervalSince1970
        let r = try redis.pipeline([
            ["ZREMRANGEBYSCORE", "presence:" + user, "-inf", String(now)],
            ["ZADD", "presence:" + user, String(now + ttl), relay],
            ["ZCARD", "presence:" + user],
            ["EXPIRE", "presence:" + user, Int(ttl) * 2],
            ["SADD", usersKey, user],
        ])
        return r[1].int == 1 && r[2].int == 1
    }

    /// Releases the claim; true when this made the user go offline.
    func release(_ redis: RedisConnection, user: String) throws -> Bool {
        let now = Date().timeIntervalSince1970
        let r = try redis.pipeline([
            ["ZREM", "presence:" + user, relay],
            ["ZREMRANGEBYSCORE", "presence:" + user, "-inf", String(now)],
            ["ZCARD", "presence:" + user],
            ["SREM", usersKey, user],
        ])
        return r[0].int == 1 && r[2].int == 0
    }

    /// Renews the relay's heartbeat and its claims on `users` (every ttl/3 s).
    func refresh(_ redis: RedisConnection, users: [String]) throws {
        let expiry = String(Date().timeIntervalSince1970 + ttl)
        var commands: [[any RedisArgument]] = [["ZADD", Presence.relaysKey, expiry, relay]]
        for u in users {
            commands.append(["ZADD", "presence:" + u, expiry, relay])
            commands.append(["EXPIRE", "presence:" + u, Int(ttl) * 2])
        }
        if !users.isEmpty { commands.append(["SADD", usersKey] + users.map { $0 as any RedisArgument }) }
        try redis.pipeline(commands)
    }

    /// The relays whose heartbeat expired (not this one).
    func deadRelays(_ redis: RedisConnection) throws -> [String] {
        let now = String(Date().timeIntervalSince1970)
        return (try redis.command("ZRANGEBYSCORE", Presence.relaysKey, "-inf", now).array ?? [])
            .compactMap(\.string).filter { $0 != relay }
    }

    /// Drops `dead`'s claims and returns the users who are offline now, unless another
    /// relay is sweeping it at this moment (then nothing; the lock lapses after `ttl` if its
    /// holder fails mid-sweep). `dead` may be this relay's own id, at start-up, for the
    /// claims of its previous run.
    func sweep(_ redis: RedisConnection, dead: String) throws -> [String] {
        guard try redis.command("SET", "presence_sweep:" + dead, relay, "NX", "EX", Int(ttl)) == .status("OK") else { return [] }
        let now = String(Date().timeIntervalSince1970)
        let users = (try redis.command("SMEMBERS", "relay_users:" + dead).array ?? []).compactMap(\.string)
        // One round trip for all of them: per user ZREM, clean-up, ZCARD.
        let r = users.isEmpty ? [] : try redis.pipeline(users.flatMap { user -> [[any RedisArgument]] in
            [["ZREM", "presence:" + user, dead], ["ZREMRANGEBYSCORE", "presence:" + user, "-inf", now], ["ZCARD", "presence:" + user]]
        })
        // Offline when this removed the last claim. A lapsed claim that someone else cleaned
        // up meanwhile was announced by them (a release) or replaced (a claim).
        let offline = users.indices.filter { r[3 * $0].int == 1 && r[3 * $0 + 2].int == 0 }.map { users[$0] }
        // The lock goes with the swept state: a relay that comes back and dies again (or
        // restarts at once) is swept anew, and a late second sweep finds nothing to do.
        try redis.pipeline([["DEL", "relay_users:" + dead], ["ZREM", Presence.relaysKey, dead], ["DEL", "presence_sweep:" + dead]])
        return offline
    }

    static func event(user: String, status: String) -> [UInt8] {
        Array("{\"type\":\"presence\",\"user_id\":\(JSON.quote(user)),\"status\":\"\(status)\"}".utf8)
    }
}

extension RelayContext {
    /// Sweeps `dead`'s presence claims and announces offline, to their rooms, the users
    /// who had no other claim. Blocking (Redis, PostgreSQL): off the event loops.
    func sweepPresence(of dead: String) {
        let logger = Logger(label: "relay.presence")
        do {
            let offline = try sessions.with { try presence.sweep($0, dead: dead) }
            guard !offline.isEmpty else { return }
            logger.info("users of a relay that is gone announced offline", metadata: ["relay": "\(dead)", "users": "\(offline.count)"])
            // Their rooms in one query (user ids come from verified tokens: UUIDs).
            var keys: [String: [String]] = [:]
            try db.with { db in
                for row in try db.query("""
                    SELECT user_id::text AS user_id, room_id::text AS room_id FROM room_members
                    WHERE user_id = ANY($1::uuid[])
                    """, ["{" + offline.joined(separator: ",") + "}"]) {
                    keys[try row.string("user_id"), default: []].append("room." + (try row.string("room_id")))
                }
            }
            for user in offline {
                hub.bridge.publish(keys: keys[user] ?? [], event: "presence", user: user, body: Presence.event(user: user, status: "offline"))
            }
        } catch {
            // Redis failed mid-sweep: the dead relay stays in presence_relays and is swept
            // again once the lock lapses. PostgreSQL failed: these users go unannounced
            // (their claims are gone, so the members list shows them offline).
            logger.warning("presence sweep failed", metadata: ["relay": "\(dead)", "error": "\(error)"])
        }
    }
}
