import Foundation
import ChatCore

/// Fixed-window counters in Redis. `reserve` counts an attempt before the work is done
/// (INCR is atomic, so a concurrent burst cannot slip extra attempts past the limit);
/// `refund` gives a successful attempt back.
public struct RateLimiter {
    public let redis: RedisConnection

    public struct Rule: Sendable {
        public let name: String
        public let limit: Int
        public let windowSeconds: Int
        public init(name: String, limit: Int, windowSeconds: Int) {
            self.name = name
            self.limit = limit
            self.windowSeconds = windowSeconds
        }
    }

    static func key(_ rule: Rule, _ subject: String) -> String {
        "ratelimit:\(rule.name):" + Crypto.sha256Hex(subject.lowercased()).prefix(32)
    }

    /// Seconds until the window ends when the limit is already reached, else nil (no change).
    public func blocked(_ rule: Rule, _ subject: String) throws -> Int? {
        let key = RateLimiter.key(rule, subject)
        let replies = try redis.pipeline([["GET", key], ["TTL", key]])
        guard let count = replies[0].int, count >= Int64(rule.limit) else { return nil }
        return max(1, Int(replies[1].int ?? Int64(rule.windowSeconds)))
    }

    /// Counts one attempt; throws 429 (with Retry-After) when it is over the limit.
    public func reserve(_ rule: Rule, _ subject: String, code: String = "too_many_requests") throws {
        let key = RateLimiter.key(rule, subject)
        let replies = try redis.pipeline([["INCR", key], ["EXPIRE", key, rule.windowSeconds, "NX"], ["TTL", key]])
        let count = replies[0].int ?? 0
        if count > Int64(rule.limit) {
            throw APIError.tooManyRequests(code, retryAfter: max(1, Int(replies[2].int ?? Int64(rule.windowSeconds))))
        }
    }

    public func refund(_ rule: Rule, _ subject: String) throws {
        try redis.command("DECR", RateLimiter.key(rule, subject))
    }
}
